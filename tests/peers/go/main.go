// Peer scenario: Microsoft's Go SDK (azsecrets + azidentity) against `keyferry emulator`, at
// default settings. Only the environment points it at the emulator (VAULT_URL,
// AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID/AZURE_CLIENT_SECRET or
// IDENTITY_ENDPOINT/IDENTITY_HEADER) and SSL_CERT_FILE trusts its CA. PEER_CREDENTIAL picks
// client-secret or managed-identity; ADMIN_URL is the emulator's admin API.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

var (
	ctx    = context.Background()
	kind   = envOr("PEER_CREDENTIAL", "client-secret")
	prefix = "go-" + kind[:2] + "-" + randHex(4)
	canary = "canary-" + randHex(16)
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func name(s string) string { return prefix + "-" + s }

func ptr[T any](v T) *T { return &v }

func admin(method, path string, body any, out any) error {
	var r *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	} else {
		r = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, os.Getenv("ADMIN_URL")+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

type counters struct {
	Operations map[string]struct {
		Statuses map[string]uint64 `json:"statuses"`
	} `json:"operations"`
}

func throttled() (uint64, error) {
	var c counters
	if err := admin("GET", "/counters", nil, &c); err != nil {
		return 0, err
	}
	return c.Operations["get_secret"].Statuses["429"], nil
}

func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func expectStatus(err error, want int) error {
	if err == nil {
		return fmt.Errorf("expected HTTP %d, the call succeeded", want)
	}
	if got := status(err); got != want {
		return fmt.Errorf("expected HTTP %d, got %d: %v", want, got, err)
	}
	return nil
}

type forged struct{}

func (forged) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{
		Token:     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.Zm9yZ2Vk",
		ExpiresOn: time.Now().Add(time.Hour),
	}, nil
}

func credential() (azcore.TokenCredential, error) {
	switch kind {
	case "client-secret":
		// Authority from AZURE_AUTHORITY_HOST, as azidentity reads it by default. The one setting
		// changed: MSAL Go sends instance discovery for an unknown authority host to the hard-coded
		// login.microsoftonline.com, which cannot be the emulator (docs/emulator.md).
		opts := &azidentity.ClientSecretCredentialOptions{DisableInstanceDiscovery: true}
		return azidentity.NewClientSecretCredential(os.Getenv("AZURE_TENANT_ID"), os.Getenv("AZURE_CLIENT_ID"), os.Getenv("AZURE_CLIENT_SECRET"), opts)
	case "managed-identity":
		return azidentity.NewManagedIdentityCredential(nil)
	}
	return nil, fmt.Errorf("PEER_CREDENTIAL must be client-secret or managed-identity, not %q", kind)
}

type check struct {
	label string
	run   func(c *azsecrets.Client) error
}

func checks() []check {
	return []check{
		{"set/get with tags and contentType", func(c *azsecrets.Client) error {
			set, err := c.SetSecret(ctx, name("a"), azsecrets.SetSecretParameters{Value: &canary, ContentType: ptr("text/plain"), Tags: map[string]*string{"team": ptr("peers")}}, nil)
			if err != nil {
				return err
			}
			got, err := c.GetSecret(ctx, name("a"), "", nil)
			if err != nil {
				return err
			}
			if *got.Value != canary || got.ID.Version() != set.ID.Version() || *got.ContentType != "text/plain" || *got.Tags["team"] != "peers" {
				return errors.New("value, version, contentType or tags differ")
			}
			return nil
		}},
		{"versions: two sets, get by version, list versions", func(c *azsecrets.Client) error {
			s1, err := c.SetSecret(ctx, name("v"), azsecrets.SetSecretParameters{Value: ptr("one")}, nil)
			if err != nil {
				return err
			}
			s2, err := c.SetSecret(ctx, name("v"), azsecrets.SetSecretParameters{Value: ptr("two")}, nil)
			if err != nil {
				return err
			}
			old, err := c.GetSecret(ctx, name("v"), s1.ID.Version(), nil)
			if err != nil || *old.Value != "one" {
				return fmt.Errorf("get by version: %v", err)
			}
			seen := map[string]bool{}
			pager := c.NewListSecretPropertiesVersionsPager(name("v"), nil)
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					return err
				}
				for _, p := range page.Value {
					seen[p.ID.Version()] = true
				}
			}
			if len(seen) != 2 || !seen[s1.ID.Version()] || !seen[s2.ID.Version()] {
				return fmt.Errorf("versions listed: %v", seen)
			}
			return nil
		}},
		{"paging: list follows nextLink past 25 items", func(c *azsecrets.Client) error {
			for i := 0; i < 27; i++ {
				if _, err := c.SetSecret(ctx, name(fmt.Sprintf("p%d", i)), azsecrets.SetSecretParameters{Value: ptr("x")}, nil); err != nil {
					return err
				}
			}
			pages, listed := 0, 0
			pager := c.NewListSecretPropertiesPager(nil)
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					return err
				}
				pages++
				for _, p := range page.Value {
					if strings.HasPrefix(p.ID.Name(), name("p")) {
						listed++
					}
				}
			}
			if pages < 2 || listed != 27 {
				return fmt.Errorf("%d pages, %d listed", pages, listed)
			}
			return nil
		}},
		{"not found -> 404", func(c *azsecrets.Client) error {
			_, err := c.GetSecret(ctx, name("missing"), "", nil)
			return expectStatus(err, 404)
		}},
		{"disabled -> 403", func(c *azsecrets.Client) error {
			if _, err := c.SetSecret(ctx, name("d"), azsecrets.SetSecretParameters{Value: ptr("x")}, nil); err != nil {
				return err
			}
			if _, err := c.UpdateSecretProperties(ctx, name("d"), "", azsecrets.UpdateSecretPropertiesParameters{SecretAttributes: &azsecrets.SecretAttributes{Enabled: ptr(false)}}, nil); err != nil {
				return err
			}
			_, err := c.GetSecret(ctx, name("d"), "", nil)
			return expectStatus(err, 403)
		}},
		{"delete, recover, delete, purge", func(c *azsecrets.Client) error {
			if _, err := c.SetSecret(ctx, name("del"), azsecrets.SetSecretParameters{Value: ptr("x")}, nil); err != nil {
				return err
			}
			if _, err := c.DeleteSecret(ctx, name("del"), nil); err != nil {
				return err
			}
			if _, err := c.GetDeletedSecret(ctx, name("del"), nil); err != nil {
				return err
			}
			if _, err := c.RecoverDeletedSecret(ctx, name("del"), nil); err != nil {
				return err
			}
			if got, err := c.GetSecret(ctx, name("del"), "", nil); err != nil || *got.Value != "x" {
				return fmt.Errorf("after recover: %v", err)
			}
			if _, err := c.DeleteSecret(ctx, name("del"), nil); err != nil {
				return err
			}
			if _, err := c.PurgeDeletedSecret(ctx, name("del"), nil); err != nil {
				return err
			}
			_, err := c.GetDeletedSecret(ctx, name("del"), nil)
			return expectStatus(err, 404)
		}},
		{"backup, purge, restore", func(c *azsecrets.Client) error {
			if _, err := c.SetSecret(ctx, name("b"), azsecrets.SetSecretParameters{Value: ptr("backed-up")}, nil); err != nil {
				return err
			}
			backup, err := c.BackupSecret(ctx, name("b"), nil)
			if err != nil {
				return err
			}
			if _, err := c.DeleteSecret(ctx, name("b"), nil); err != nil {
				return err
			}
			if _, err := c.PurgeDeletedSecret(ctx, name("b"), nil); err != nil {
				return err
			}
			if _, err := c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: backup.Value}, nil); err != nil {
				return err
			}
			got, err := c.GetSecret(ctx, name("b"), "", nil)
			if err != nil || *got.Value != "backed-up" {
				return fmt.Errorf("after restore: %v", err)
			}
			return nil
		}},
		{"invalid name -> 400", func(c *azsecrets.Client) error {
			_, err := c.SetSecret(ctx, prefix+"_bad_name", azsecrets.SetSecretParameters{Value: ptr("x")}, nil)
			return expectStatus(err, 400)
		}},
		{"429 with Retry-After: the SDK waits and succeeds", func(c *azsecrets.Client) error {
			if _, err := c.SetSecret(ctx, name("t"), azsecrets.SetSecretParameters{Value: ptr("throttled")}, nil); err != nil {
				return err
			}
			before, err := throttled()
			if err != nil {
				return err
			}
			fault := map[string]any{"fault": "throttle", "operation": "get_secret", "count": 1, "retry_after_secs": 1}
			if err := admin("POST", "/faults", fault, nil); err != nil {
				return err
			}
			got, err := c.GetSecret(ctx, name("t"), "", nil)
			if err != nil || *got.Value != "throttled" {
				return fmt.Errorf("get through throttling: %v", err)
			}
			after, err := throttled()
			if err != nil {
				return err
			}
			if after != before+1 {
				return fmt.Errorf("429s served: before %d after %d", before, after)
			}
			return nil
		}},
		{"forged token -> 401", func(*azsecrets.Client) error {
			f, err := azsecrets.NewClient(os.Getenv("VAULT_URL"), forged{}, nil)
			if err != nil {
				return err
			}
			_, err = f.GetSecret(ctx, name("a"), "", nil)
			return expectStatus(err, 401)
		}},
	}
}

func main() {
	cred, err := credential()
	if err != nil {
		fmt.Println("credential:", err)
		os.Exit(1)
	}
	client, err := azsecrets.NewClient(os.Getenv("VAULT_URL"), cred, nil)
	if err != nil {
		fmt.Println("client:", err)
		os.Exit(1)
	}
	passed, failed := 0, 0
	for _, ch := range checks() {
		if err := ch.run(client); err != nil {
			failed++
			fmt.Printf("FAIL go/%s: %s: %s\n", kind, ch.label, strings.ReplaceAll(err.Error(), canary, "<canary>"))
		} else {
			passed++
			fmt.Printf("ok   go/%s: %s\n", kind, ch.label)
		}
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
