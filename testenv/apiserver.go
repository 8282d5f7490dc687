package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// runAPIServer runs kube-apiserver until ctx is done. It mirrors what
// app.NewAPIServerCommand's RunE does (options -> Complete -> Validate ->
// Run), minus the cobra command, whose constructor installs a process-wide
// signal handler we do not want, and minus its logging setup (ours is in
// logging.go). ln is the already-open https listener on 127.0.0.1:port.
func runAPIServer(ctx context.Context, ln net.Listener, port int, etcdURL string, f *credentialFiles) error {
	s := options.NewServerRunOptions()

	// Flags exactly as on the command line: this keeps us on the supported,
	// documented surface instead of poking at option structs.
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--token-auth-file=" + f.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://127.0.0.1:" + strconv.Itoa(port),
		"--service-account-key-file=" + f.saKey,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// The "lease" reconciler refuses a loopback advertise address; there
		// is nothing to reconcile for a single local apiserver anyway.
		"--endpoint-reconciler-type=none",
		// No kubelet/scheduler and no "serviceaccount" controller: Pods
		// never run, so don't demand a default ServiceAccount (as envtest).
		"--disable-admission-plugins=ServiceAccount",
		// Fewer goroutines and less startup work; no fairness needed here.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	nfs := s.Flags()
	for _, set := range nfs.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("kube-apiserver flags: %w", err)
	}
	// Serve on our listener (BindPort is ignored when Listener is set).
	s.SecureServing.Listener = ln

	// What the cobra command's PersistentPreRunE does.
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	return app.Run(ctx, completed)
}
