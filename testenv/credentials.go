package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
)

// Identities in the static token file. The admin and the controller manager
// are in system:masters (bypasses RBAC). The plain user has no groups beyond
// system:authenticated, so it can only do discovery until a test grants it
// rights with a Role/RoleBinding: that is how keyferry's RBAC is tested.
const (
	adminUser = "keyferry-admin"
	plainUser = "keyferry-user"
	kcmUser   = "system:kube-controller-manager"
)

type credentialFiles struct {
	caCert          string // serving CA (PEM)
	servingCert     string // leaf + CA (PEM), for --tls-cert-file
	servingKey      string
	saKey           string // ECDSA key signing/verifying service account tokens
	tokenFile       string // --token-auth-file
	adminKubeconfig string
	userKubeconfig  string
	kcmKubeconfig   string
	adminToken      string
	caPEM           []byte
}

// prepareDataDir returns the data dir to use and whether we own it (and so
// must remove it on exit). A user-given dir is created if missing and checked
// for writability up front, so the failure is one clear line instead of an
// etcd stack of errors.
func prepareDataDir(requested string) (string, bool, error) {
	if requested == "" {
		d, err := os.MkdirTemp("", "kube-testenv-")
		if err != nil {
			return "", false, fmt.Errorf("cannot create a temp data dir: %v", err)
		}
		return d, true, nil
	}
	abs, err := filepath.Abs(requested)
	if err != nil {
		return "", false, fmt.Errorf("bad --data-dir %q: %v", requested, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", false, fmt.Errorf("data dir %s is not usable: %v", abs, err)
	}
	probe, err := os.CreateTemp(abs, ".write-probe-")
	if err != nil {
		return "", false, fmt.Errorf("data dir %s is not writable: %v", abs, err)
	}
	probe.Close()
	_ = os.Remove(probe.Name())
	return abs, false, nil
}

// writeCredentials generates fresh certs, keys and tokens and the kubeconfigs
// pointing at url -- unless the data dir already holds a complete set for the
// same url (a restart on the same --data-dir and --port): then they are kept,
// so clients of the previous run (a controller under test holding the admin
// kubeconfig) reach the restarted apiserver with the CA and token they have.
func writeCredentials(dir, url string) (*credentialFiles, error) {
	f := credentialPaths(dir)
	if reused, err := reuseCredentials(f, url); err != nil || reused {
		return f, err
	}
	return f, generateCredentials(f, url)
}

func credentialPaths(dir string) *credentialFiles {
	return &credentialFiles{
		caCert:          filepath.Join(dir, "ca.crt"),
		servingCert:     filepath.Join(dir, "apiserver.crt"),
		servingKey:      filepath.Join(dir, "apiserver.key"),
		saKey:           filepath.Join(dir, "sa.key"),
		tokenFile:       filepath.Join(dir, "tokens.csv"),
		adminKubeconfig: filepath.Join(dir, "kubeconfig"),
		userKubeconfig:  filepath.Join(dir, "kubeconfig-user"),
		kcmKubeconfig:   filepath.Join(dir, "kubeconfig-controller-manager"),
	}
}

// reuseCredentials loads the credentials of a previous run on the same url;
// false (and no error) when there is no complete set for it.
func reuseCredentials(f *credentialFiles, url string) (bool, error) {
	for _, p := range []string{f.caCert, f.servingCert, f.servingKey, f.saKey, f.tokenFile, f.userKubeconfig, f.kcmKubeconfig} {
		if _, err := os.Stat(p); err != nil {
			return false, nil
		}
	}
	kc, err := clientcmd.LoadFromFile(f.adminKubeconfig)
	if err != nil {
		return false, nil
	}
	cluster, ok := kc.Clusters["kube-testenv"]
	auth, okAuth := kc.AuthInfos[adminUser]
	if !ok || !okAuth || cluster.Server != url || auth.Token == "" {
		return false, nil
	}
	caPEM, err := os.ReadFile(f.caCert)
	if err != nil {
		return false, fmt.Errorf("reading %s: %v", f.caCert, err)
	}
	f.caPEM, f.adminToken = caPEM, auth.Token
	logf("reusing the credentials in %s (same data dir and url as the previous run)", filepath.Dir(f.caCert))
	return true, nil
}

// generateCredentials writes a fresh set of certs, keys, tokens and kubeconfigs.
func generateCredentials(f *credentialFiles, url string) error {
	// GenerateSelfSignedCertKey returns a leaf (for 127.0.0.1 and localhost)
	// followed by the CA that signed it. The server presents both; clients
	// only need the CA.
	chainPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost",
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		return fmt.Errorf("generating serving cert: %v", err)
	}
	certs, err := certutil.ParseCertsPEM(chainPEM)
	if err != nil || len(certs) < 2 {
		return fmt.Errorf("unexpected serving cert chain (%d certs): %v", len(certs), err)
	}
	f.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[len(certs)-1].Raw})

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER})

	f.adminToken = randomToken()
	userToken, kcmToken := randomToken(), randomToken()
	// Format: token,user,uid[,"group1,group2"]
	tokens := fmt.Sprintf("%s,%s,%s,system:masters\n%s,%s,%s\n%s,%s,%s,system:masters\n",
		f.adminToken, adminUser, adminUser,
		userToken, plainUser, plainUser,
		kcmToken, kcmUser, kcmUser)

	for _, w := range []struct {
		path string
		data []byte
	}{
		{f.caCert, f.caPEM},
		{f.servingCert, chainPEM},
		{f.servingKey, keyPEM},
		{f.saKey, saPEM},
		{f.tokenFile, []byte(tokens)},
	} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %v", w.path, err)
		}
	}

	for _, kc := range []struct{ path, user, token string }{
		{f.adminKubeconfig, adminUser, f.adminToken},
		{f.userKubeconfig, plainUser, userToken},
		{f.kcmKubeconfig, kcmUser, kcmToken},
	} {
		if err := writeKubeconfig(kc.path, url, f.caPEM, kc.user, kc.token); err != nil {
			return fmt.Errorf("writing %s: %v", kc.path, err)
		}
	}
	return nil
}

func writeKubeconfig(path, url string, caPEM []byte, user, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kube-testenv"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: caPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["kube-testenv"] = &clientcmdapi.Context{Cluster: "kube-testenv", AuthInfo: user, Namespace: "default"}
	kc.CurrentContext = "kube-testenv"
	return clientcmd.WriteToFile(*kc, path)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
