package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubcommandSkipsGlobalFlags(t *testing.T) {
	cmd, rest := subcommand([]string{"--root", "/run/r", "--log", "/x.log", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "id"})
	if cmd != "create" || flagValue(rest, "--bundle", "-b") != "/b" {
		t.Fatalf("got %q %v", cmd, rest)
	}
	if v := flagValue([]string{"--bundle=/c"}, "--bundle", "-b"); v != "/c" {
		t.Fatalf("--bundle=: got %q", v)
	}
}

func TestFitProcessDropsSysResourceAndRaisesOOMScoreAdj(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	spec := `{"ociVersion":"1.0.2","process":{"oomScoreAdj":-1000,"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_RESOURCE"],"effective":["CAP_SYS_RESOURCE"]}},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := adjust([]string{"create", "--bundle", dir, "id"}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	got := string(raw)
	own, _ := ownOOMScoreAdj()
	for _, want := range []string{`"bounding":["CAP_CHOWN"]`, `"effective":[]`, `"root":{"path":"rootfs"}`} {
		if !contains(got, want) {
			t.Errorf("%s: want %s", got, want)
		}
	}
	if own > -1000 && contains(got, `"oomScoreAdj":-1000`) {
		t.Errorf("oomScoreAdj not raised to %d: %s", own, got)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
