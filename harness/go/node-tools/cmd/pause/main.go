// pause holds a pod's namespaces open: the first process of every pod sandbox. It does what Kubernetes'
// build/pause/linux/pause.c does — sleep until SIGINT or SIGTERM, reap children (it is PID 1 of the pod's PID
// namespace when namespaces are shared) — and exits 0 on those signals. `-v` prints its version, as pause does.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "keda-harness-pause 3.10.1"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println(version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s == syscall.SIGCHLD {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
		os.Exit(0)
	}
}
