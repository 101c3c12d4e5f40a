// pgconform connects to PostgreSQL with pgx exactly as KEDA's postgresql scaler does (a keyword/value
// connection string "host=.. port=.. user=.. dbname=.. sslmode=.. password=..") and prints one JSON line with the
// outcome, so the Rust tests can compare pgx's own error text with what a KEDA user sees.
//
// The same source builds against two pgx versions: go.mod pins v5.5.5 (KEDA 2.14.1 / 2.15.0) and pgx592.mod pins
// v5.9.2 (KEDA 2.20.2); select with `go build -modfile=pgx592.mod`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

type outcome struct {
	PgxVersion string `json:"pgx_version"`
	OK         bool   `json:"ok"`
	Value      string `json:"value,omitempty"`
	Error      string `json:"error,omitempty"`
	// Fields of the server's ErrorResponse, when the failure came from the server.
	Severity string `json:"severity,omitempty"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
}

func pgxVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/jackc/pgx/v5" {
			return dep.Version
		}
	}
	return "unknown"
}

func main() {
	conn := flag.String("conn", "", "keyword/value connection string, as KEDA builds it")
	query := flag.String("query", "SELECT COUNT(*) FROM movies", "query whose first column is printed")
	timeout := flag.Duration("timeout", 20*time.Second, "overall timeout")
	queryTimeout := flag.Duration("query-timeout", 0, "if set, after this long pgx sends a CancelRequest for the running query")
	flag.Parse()
	if *conn == "" {
		fmt.Fprintln(os.Stderr, "pgconform: -conn is required")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out := outcome{PgxVersion: pgxVersion()}
	c, err := pgx.Connect(ctx, *conn)
	if err == nil {
		var v any
		if *queryTimeout > 0 {
			// pgx's default context handler (both pinned versions) only sets a deadline on the socket and never
			// sends a CancelRequest; ask pgx for one explicitly, as its CancelRequestContextWatcherHandler would.
			t := time.AfterFunc(*queryTimeout, func() { _ = c.PgConn().CancelRequest(context.Background()) })
			defer t.Stop()
		}
		err = c.QueryRow(ctx, *query).Scan(&v)
		if err == nil {
			out.OK = true
			out.Value = fmt.Sprint(v)
		}
		c.Close(ctx)
	}
	if err != nil {
		out.Error = err.Error()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			out.Severity = pgErr.Severity
			out.Code = pgErr.Code
			out.Message = pgErr.Message
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
