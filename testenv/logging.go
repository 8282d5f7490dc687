package main

import (
	"flag"
	"io"
	"strconv"

	"k8s.io/klog/v2"
)

// setupLogging keeps klog (used by the apiserver and the controller manager)
// quiet: at verbosity 0 only warnings and errors reach stderr; info lines
// are dropped. With -v=N (N >= 1) everything up to V(N) goes to stderr.
// stdout never gets log output: it carries only the readiness line.
func setupLogging(verbosity int) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", strconv.Itoa(verbosity))
	if verbosity > 0 {
		_ = fs.Set("logtostderr", "true")
		return
	}
	// Not logging to stderr directly: every severity goes to its (discarded)
	// per-severity output, and stderrthreshold copies WARNING and above to
	// stderr. No log files are created since all outputs are set.
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "WARNING")
	for _, sev := range []string{"INFO", "WARNING", "ERROR", "FATAL"} {
		klog.SetOutputBySeverity(sev, io.Discard)
	}
}
