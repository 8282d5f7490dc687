package main

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdLogLevel is etcd's log level: errors only while running, raised to
// fatal just before we close it, since embedded etcd logs every listener it
// closes as an "error".
var etcdLogLevel = zap.NewAtomicLevelAt(zap.ErrorLevel)

// startEtcd starts a single-member etcd on loopback, storing its data under
// dir/etcd, and returns its client URL once it is ready to serve.
//
// The etcd version is the one k8s.io/kubernetes v1.37.2 itself requires
// (go.etcd.io/etcd/*/v3 v3.7.0), so client and server match exactly.
func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, string, error) {
	ports, err := freePortsIfZero(clientPort, peerPort)
	if err != nil {
		return nil, "", err
	}
	clientPort, peerPort = ports[0], ports[1]
	// Checked here so a taken port gives a clear message (etcd's own error is
	// buried in a structured log line).
	for _, p := range []int{clientPort, peerPort} {
		if err := checkPortFree(p); err != nil {
			return nil, "", err
		}
	}

	cu := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	pu := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "kube-testenv"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// No metrics endpoint: nothing scrapes it and it would need a port.
	cfg.ListenMetricsUrls = nil
	// Test data is disposable: skipping fsync makes every write much faster
	// (envtest runs etcd with --unsafe-no-fsync too).
	cfg.UnsafeNoFsync = true
	// kube-apiserver relies on progress notifications for consistent reads
	// from its watch cache; 5s is the value Kubernetes recommends.
	cfg.WatchProgressNotifyInterval = 5 * time.Second
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"} // stdout is reserved for the readiness line
	zc := logutil.DefaultZapLoggerConfig
	zc.Level = etcdLogLevel
	zc.Encoding = "console"
	zc.DisableStacktrace = true
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	lg, err := zc.Build()
	if err != nil {
		return nil, "", err
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named("etcd"))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, cu.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, "", fmt.Errorf("not ready after 60s")
	}
}

// freePortsIfZero asks the kernel for a free loopback port for each 0 in ps
// (all listeners are held open together so the ports are distinct). etcd
// cannot take a pre-opened listener, so there is a tiny window in which
// another process could grab a port; etcd then fails with a clear error.
func freePortsIfZero(ps ...int) ([]int, error) {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p
		if p != 0 {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cannot find a free port: %v", err)
		}
		defer ln.Close()
		out[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return out, nil
}

func checkPortFree(p int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return fmt.Errorf("port 127.0.0.1:%d is not available: %v", p, err)
	}
	return ln.Close()
}
