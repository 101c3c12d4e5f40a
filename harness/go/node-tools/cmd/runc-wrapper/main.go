// keda-harness-runc runs the real runc after making the OCI spec fit a capability bounding set without
// CAP_SYS_RESOURCE.
//
// Why: on this project's CI machines the kernel's bounding set lacks CAP_SYS_RESOURCE. `docker run --privileged`
// asks runc for every capability, runc cannot grant one outside the bounding set and fails with "unable to apply
// caps: operation not permitted". Inside a kind node, containerd's CRI asks for oom_score_adj -998 on pod
// sandboxes; lowering oom_score_adj needs CAP_SYS_RESOURCE, so runc fails with "can't get final child's PID from
// pipe: EOF". This wrapper, registered as dockerd's default runtime and as containerd's runc BinaryName in the
// node image, removes CAP_SYS_RESOURCE from the spec's capability lists and raises an oomScoreAdj below its own
// to its own. Where the bounding set has CAP_SYS_RESOURCE (users' machines) it changes nothing.
//
// Which files: `create` and `run` read <bundle>/config.json (--bundle/-b, default the working directory);
// `exec` reads the --process/-p file (a Process object). Every other command passes through untouched.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capSysResource is CAP_SYS_RESOURCE's number (linux/capability.h).
const capSysResource = 24

// realRuncCandidates are where Debian's and upstream's runc live; the first that is not this program wins.
// KEDA_HARNESS_REAL_RUNC overrides them.
var realRuncCandidates = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"}

func main() {
	real, err := realRunc()
	if err != nil {
		fmt.Fprintln(os.Stderr, "keda-harness-runc:", err)
		os.Exit(127)
	}
	if !boundingSetHas(capSysResource) {
		if err := adjust(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "keda-harness-runc:", err)
			os.Exit(1)
		}
	}
	argv := append([]string{real}, os.Args[1:]...)
	if err := syscall.Exec(real, argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "keda-harness-runc: exec %s: %v\n", real, err)
		os.Exit(127)
	}
}

func realRunc() (string, error) {
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	candidates := realRuncCandidates
	if p := os.Getenv("KEDA_HARNESS_REAL_RUNC"); p != "" {
		candidates = []string{p}
	}
	for _, c := range candidates {
		resolved, err := filepath.EvalSymlinks(c)
		if err != nil || resolved == self {
			continue
		}
		if st, err := os.Stat(resolved); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no runc found at %s (set KEDA_HARNESS_REAL_RUNC to its path)", strings.Join(candidates, ", "))
}

// boundingSetHas reads CapBnd from /proc/self/status. When it cannot be read, it answers true: change nothing.
func boundingSetHas(capability uint) bool {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
			if err != nil {
				return true
			}
			return bits&(1<<capability) != 0
		}
	}
	return true
}

// adjust finds the spec file the command reads, if any, and rewrites it.
func adjust(args []string) error {
	command, rest := subcommand(args)
	switch command {
	case "create", "run":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		return rewrite(filepath.Join(bundle, "config.json"), func(spec map[string]any) {
			if process, ok := spec["process"].(map[string]any); ok {
				fitProcess(process)
			}
		})
	case "exec":
		if file := flagValue(rest, "--process", "-p"); file != "" {
			return rewrite(file, fitProcess)
		}
	}
	return nil
}

// globalFlagsWithValue are runc's global flags that take a separate value (runc --help).
var globalFlagsWithValue = map[string]bool{"--log": true, "--log-format": true, "--root": true, "--criu": true, "--rootless": true}

// subcommand skips runc's global flags and returns the command and what follows it.
func subcommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if globalFlagsWithValue[a] {
			i++
		}
	}
	return "", nil
}

// flagValue returns the value of a flag given as `--f v`, `--f=v` or `-f v`.
func flagValue(args []string, long, short string) string {
	for i, a := range args {
		if (a == long || a == short) && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, long+"="); ok {
			return v
		}
	}
	return ""
}

func rewrite(path string, fit func(map[string]any)) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	fit(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, out, 0o600)
}

// fitProcess drops CAP_SYS_RESOURCE from every capability list and raises oomScoreAdj to at least our own.
func fitProcess(process map[string]any) {
	if caps, ok := process["capabilities"].(map[string]any); ok {
		for set, list := range caps {
			items, ok := list.([]any)
			if !ok {
				continue
			}
			kept := make([]any, 0, len(items))
			for _, c := range items {
				if c != "CAP_SYS_RESOURCE" {
					kept = append(kept, c)
				}
			}
			caps[set] = kept
		}
	}
	if adj, ok := process["oomScoreAdj"].(float64); ok {
		if own, err := ownOOMScoreAdj(); err == nil && int(adj) < own {
			process["oomScoreAdj"] = own
		}
	}
}

func ownOOMScoreAdj() (int, error) {
	raw, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(raw)))
}
