// Command kube-testenv runs a throw-away Kubernetes control plane for
// keyferry's integration tests, in ONE process, on 127.0.0.1 only:
//
//   - etcd, embedded (no fsync: the data is disposable),
//   - kube-apiserver (static-token authn, RBAC authz),
//   - kube-controller-manager limited to the garbage-collector, namespace and
//     serviceaccount-token controllers, so ownerReference GC works and
//     namespaces really finish deleting (envtest has neither).
//
// There is no scheduler and no kubelet: Pods never run. That is fine for an
// operator that only reads/writes API objects (Secrets, CRs, ...).
//
// Contract with the callers (scripts/testenv, the Rust test harness):
//   - exactly one line on stdout once /readyz is 200 and the "default"
//     namespace exists:
//     KUBE_TESTENV_READY kubeconfig=<path> kubeconfig_user=<path> url=https://127.0.0.1:<port>
//   - everything else (logs) goes to stderr;
//   - SIGTERM/SIGINT: graceful stop, exit 0;
//   - startup faults: one "kube-testenv: ..." line on stderr, exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/klog/v2"
)

// shutdownTimeout bounds the whole graceful stop; past it we exit anyway so
// a test runner never hangs on us.
const shutdownTimeout = 20 * time.Second

type cliFlags struct {
	dataDir      string
	port         int
	etcdPort     int
	etcdPeerPort int
	verbosity    int
	withParent   bool
}

func main() {
	var o cliFlags
	fs := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for etcd data, certs, tokens and kubeconfigs (default: a fresh temp dir, removed on exit)")
	fs.IntVar(&o.port, "port", 0, "kube-apiserver https port on 127.0.0.1 (0 = pick a free one)")
	fs.IntVar(&o.etcdPort, "etcd-port", 0, "etcd client port on 127.0.0.1 (0 = pick a free one)")
	fs.IntVar(&o.etcdPeerPort, "etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (0 = pick a free one)")
	fs.IntVar(&o.verbosity, "v", 0, "klog verbosity; 0 logs warnings and errors only, >=1 also info")
	fs.BoolVar(&o.withParent, "exit-with-parent", false, "shut down (as on SIGTERM) when the parent process dies; for test harnesses that spawn it directly")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fatalf("unexpected arguments: %q", fs.Args())
	}
	os.Exit(run(o))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kube-testenv: "+format+"\n", args...)
	os.Exit(1)
}

// run returns the process exit code. Startup faults call fatalf (after
// cleaning up what was already started where that matters).
func run(o cliFlags) int {
	setupLogging(o.verbosity)

	// Our own signal handling: the apiserver/KCM cobra commands would install
	// process-wide handlers (and panic if two are installed), so we drive
	// both through their options/Run APIs with this context instead.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if o.withParent {
		ctx = exitWithParent(ctx)
	}

	// 1. Data dir (checked for writability before anything starts).
	dir, removeDir, err := prepareDataDir(o.dataDir)
	if err != nil {
		fatalf("%v", err)
	}
	cleanupDir := func() {
		if removeDir {
			_ = os.RemoveAll(dir)
		}
	}

	// 2. The apiserver's listener is opened here, by us, and handed to the
	// apiserver: a taken port is reported clearly, and --port=0 has no race.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)))
	if err != nil {
		cleanupDir()
		fatalf("cannot listen on 127.0.0.1:%d for kube-apiserver (port taken?): %v", o.port, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("https://127.0.0.1:%d", port)

	// 3. Certs, keys, tokens, kubeconfigs.
	files, err := writeCredentials(dir, url)
	if err != nil {
		ln.Close()
		cleanupDir()
		fatalf("%v", err)
	}

	// 4. etcd.
	etcd, etcdURL, err := startEtcd(dir, o.etcdPort, o.etcdPeerPort)
	if err != nil {
		ln.Close()
		cleanupDir()
		fatalf("etcd failed to start: %v", err)
	}
	stopEtcd := func() {
		etcdLogLevel.SetLevel(zap.FatalLevel)
		etcd.Close()
		<-etcd.Server.StopNotify()
	}

	// klog.Fatal (used by some upstream code paths, e.g. a post-start hook
	// that sees its context cancelled) would exit without our cleanup.
	// While stopping, such a fatal exits with the code we were going to
	// return anyway (finalCode >= 0 once shutdown has begun).
	var finalCode atomic.Int32
	finalCode.Store(-1)
	klog.OsExit = func(code int) {
		cleanupDir()
		if c := finalCode.Load(); c >= 0 {
			code = int(c)
		}
		os.Exit(code)
	}

	// 5. kube-apiserver. It gets its own context, not ctx: a signal that
	// arrives while it is still starting must not cancel it mid-start (its
	// post-start hooks klog.Fatal on a cancelled context); we wait for it to
	// be ready, then stop it in order.
	apiCtx, apiCancel := context.WithCancel(context.Background())
	defer apiCancel()
	apiDone := make(chan error, 1)
	go func() { apiDone <- runAPIServer(apiCtx, ln, port, etcdURL, files) }()

	// 6. Wait for /readyz and the default namespace, then the KCM.
	startupStart := time.Now()
	readyErr := waitReady(ctx, url, files, apiDone, 120*time.Second)
	kcmDone := make(chan error, 1)
	if readyErr == nil {
		go func() { kcmDone <- runControllerManager(ctx, files) }()
		fmt.Fprintf(os.Stdout, "KUBE_TESTENV_READY kubeconfig=%s kubeconfig_user=%s url=%s\n",
			files.adminKubeconfig, files.userKubeconfig, url)
		logf("ready in %s (data dir %s)", time.Since(startupStart).Round(time.Millisecond), dir)
	}

	// 7. Run until a signal or a component dies.
	exitCode := 0
	if readyErr != nil {
		if ctx.Err() != nil {
			logf("interrupted before ready; stopping once it is up")
			finalCode.Store(0)
			_ = waitReady(context.Background(), url, files, apiDone, 15*time.Second)
		} else {
			fmt.Fprintf(os.Stderr, "kube-testenv: %v\n", readyErr)
			exitCode = 1
		}
	} else {
		select {
		case <-ctx.Done():
			logf("shutting down")
		case err := <-apiDone:
			fmt.Fprintf(os.Stderr, "kube-testenv: kube-apiserver stopped unexpectedly: %v\n", err)
			exitCode = 1
			apiDone <- err // let the shutdown below see it as finished
		case err := <-kcmDone:
			fmt.Fprintf(os.Stderr, "kube-testenv: kube-controller-manager stopped unexpectedly: %v\n", err)
			exitCode = 1
		case <-etcd.Err():
			fmt.Fprintf(os.Stderr, "kube-testenv: etcd stopped unexpectedly\n")
			exitCode = 1
		}
	}

	// 8. Ordered shutdown: apiserver (and KCM, same ctx), then etcd, then
	// the temp dir. A watchdog forces the exit if anything hangs.
	finalCode.Store(int32(exitCode))
	watchdog := time.AfterFunc(shutdownTimeout, func() {
		fmt.Fprintf(os.Stderr, "kube-testenv: shutdown took over %s, exiting anyway\n", shutdownTimeout)
		cleanupDir()
		os.Exit(exitCode)
	})
	defer watchdog.Stop()
	stop()
	apiCancel()
	if err := <-apiDone; err != nil && exitCode == 0 && readyErr == nil {
		logf("kube-apiserver returned during shutdown: %v", err)
	}
	stopEtcd()
	cleanupDir()
	logf("stopped")
	return exitCode
}

// exitWithParent returns a context that is also cancelled when the parent
// process goes away (we get reparented), so a crashed test harness does not
// leave a control plane running. Polling getppid is portable and, unlike
// PR_SET_PDEATHSIG, not tied to the lifetime of the parent's spawning thread.
func exitWithParent(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					logf("parent process %d is gone, shutting down", parent)
					cancel()
					return
				}
			}
		}
	}()
	return ctx
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kube-testenv: "+format+"\n", args...)
}
