package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

// kcmControllers is the minimum that makes the API behave like a real
// cluster for an operator's tests:
//   - garbagecollector: deletes dependents whose ownerReferences point at a
//     deleted owner (what makes "owned Secrets" go away);
//   - namespace: empties and finalizes Terminating namespaces, so a deleted
//     namespace actually disappears;
//   - serviceaccount-token: populates legacy service-account token Secrets.
const kcmControllers = "garbagecollector,namespace,serviceaccount-token"

// runControllerManager runs kube-controller-manager until ctx is done. Like
// runAPIServer it goes through the options/Run API rather than the cobra
// command: the command's RunE ignores our context (it uses
// context.Background()) and may install a second process-wide signal
// handler, which panics next to the apiserver's.
func runControllerManager(ctx context.Context, f *credentialFiles) error {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + f.kcmKubeconfig,
		"--controllers=" + kcmControllers,
		"--leader-elect=false", // single instance; saves a Lease loop
		"--secure-port=0",      // no healthz/metrics server (and so no delegated authn/authz)
		"--use-service-account-credentials=false",
		"--service-account-private-key-file=" + f.saKey,
		"--root-ca-file=" + f.caCert,
	}
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	nfs := s.Flags(app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	for _, set := range nfs.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("kube-controller-manager flags: %w", err)
	}
	// What the cobra command's PersistentPreRunE does. The registry is the
	// process-wide default one, shared with (and already set by) the
	// apiserver; setting it again with no version flags is a no-op.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	c, err := s.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	if err != nil {
		return fmt.Errorf("kube-controller-manager config: %w", err)
	}
	return app.Run(ctx, c.Complete())
}
