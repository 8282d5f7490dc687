package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"
)

// waitReady polls until GET /readyz is 200 and the "default" namespace
// exists (the same two checks kube-apiserver's own test server uses), or
// until the apiserver goroutine returns, ctx ends, or the timeout passes.
func waitReady(ctx context.Context, url string, f *credentialFiles, apiDone chan error, timeout time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()

	get := func(path string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
		req.Header.Set("Authorization", "Bearer "+f.adminToken)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastReadyz := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-apiDone:
			apiDone <- err // keep it for the shutdown path
			if err == nil {
				err = fmt.Errorf("exited")
			}
			return fmt.Errorf("kube-apiserver failed to start: %v", err)
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after %s (last /readyz status %d)", timeout, lastReadyz)
		case <-tick.C:
			if lastReadyz = get("/readyz"); lastReadyz != http.StatusOK {
				continue
			}
			if get("/api/v1/namespaces/default") == http.StatusOK {
				return nil
			}
		}
	}
}
