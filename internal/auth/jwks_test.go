package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/walcast/walcast/internal/eventually"
)

const jwksUser = "11111111-1111-4111-8111-111111111111"

// idp is an identity provider's JWKS endpoint whose keys a test rotates.
type idp struct {
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int64
	down    atomic.Bool
	delay   atomic.Int64 // how long each answer takes (a distant provider)
	huge    atomic.Bool  // answer a body far larger than a key set
	srv     *httptest.Server
}

func newIdP(t *testing.T) *idp {
	p := &idp{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		time.Sleep(time.Duration(p.delay.Load())) // the provider's own latency
		if p.huge.Load() {
			_, _ = w.Write([]byte(`{"keys":[],"pad":"`))
			for range 64 {
				_, _ = w.Write(make([]byte, 64<<10))
			}
			return
		}
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": p.keys})
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) publish(keys ...map[string]string) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signer is a key of the identity provider, as its JWK and a signer.
type signer struct {
	kid, alg string
	method   jwt.SigningMethod
	private  crypto.PrivateKey
	jwk      map[string]string
}

func rsaKey(t *testing.T, kid string) signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: "RS256", method: jwt.SigningMethodRS256, private: k, jwk: map[string]string{
		"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}}
}

func ecKey(t *testing.T, kid string) signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: "ES256", method: jwt.SigningMethodES256, private: k, jwk: map[string]string{
		"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(pub[1:33]), "y": b64(pub[33:])}}
}

func edKey(t *testing.T, kid string) signer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: "EdDSA", method: jwt.SigningMethodEdDSA, private: priv, jwk: map[string]string{
		"kty": "OKP", "kid": kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519", "x": b64(pub)}}
}

func (s signer) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, claims)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.private)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func claims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": jwksUser, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func jwksVerifier(t *testing.T, p *idp, c VerifierConfig, refresh, unknownKID time.Duration) *Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	j, err := NewJWKS(ctx, JWKSConfig{URL: p.srv.URL, RefreshInterval: refresh, UnknownKIDInterval: unknownKID, HTTPTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.JWKS = j
	v, err := NewVerifierFor(c)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "the key set fetched", func() bool { return v.Ready(context.Background()) == nil })
	return v
}

// TestJWKSAlgorithms: RS256, ES256 and EdDSA tokens verify against the
// identity provider's keys, each only with its configured algorithm.
func TestJWKSAlgorithms(t *testing.T) {
	for _, mk := range []func(*testing.T, string) signer{rsaKey, ecKey, edKey} {
		key := mk(t, "k1")
		t.Run(key.alg, func(t *testing.T) {
			p := newIdP(t)
			p.publish(key.jwk)
			v := jwksVerifier(t, p, VerifierConfig{Algorithm: key.alg}, time.Hour, time.Hour)
			got, err := v.Verify(key.sign(t, claims(nil)))
			if err != nil || got.UserID != jwksUser {
				t.Fatalf("Verify = %+v, %v", got, err)
			}
			other := "RS256"
			if key.alg == "RS256" {
				other = "ES256"
			}
			pinned, err := NewVerifierFor(VerifierConfig{Algorithm: other, JWKS: v.jwks})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pinned.Verify(key.sign(t, claims(nil))); err == nil {
				t.Fatalf("a %s token passed a verifier pinned to %s", key.alg, other)
			}
		})
	}
}

// TestJWKSRefusesConfusion: alg none, and an HS256 token whose secret is
// the provider's public key (the classic confusion), are refused by a
// verifier pinned to RS256.
func TestJWKSRefusesConfusion(t *testing.T) {
	key := rsaKey(t, "k1")
	p := newIdP(t)
	p.publish(key.jwk)
	v := jwksVerifier(t, p, VerifierConfig{Algorithm: "RS256"}, time.Hour, time.Hour)
	pubDER := key.private.(*rsa.PrivateKey).PublicKey.N.Bytes()
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
	hs.Header["kid"] = "k1"
	confused, _ := hs.SignedString(pubDER)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil))
	none.Header["kid"] = "k1"
	unsigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	for name, raw := range map[string]string{"HS256 with the public key": confused, "alg none": unsigned} {
		if _, err := v.Verify(raw); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestJWKSClaims: the user claim is configurable; iss and aud are checked
// when set; exp is required.
func TestJWKSClaims(t *testing.T) {
	key := rsaKey(t, "k1")
	p := newIdP(t)
	p.publish(key.jwk)
	v := jwksVerifier(t, p, VerifierConfig{Algorithm: "RS256", UserClaim: "user_id", Issuer: "https://idp.example", Audience: "walcast"}, time.Hour, time.Hour)
	good := map[string]any{"user_id": jwksUser, "sub": "auth0|abc", "iss": "https://idp.example", "aud": []string{"api", "walcast"}}
	if got, err := v.Verify(key.sign(t, claims(good))); err != nil || got.UserID != jwksUser {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	for name, change := range map[string]map[string]any{
		"no user claim":  {"user_id": nil},
		"user not uuid":  {"user_id": "auth0|abc"},
		"wrong issuer":   {"iss": "https://evil.example"},
		"wrong audience": {"aud": "other"},
		"no exp":         {"exp": nil},
	} {
		c := claims(good)
		for k, val := range change {
			if val == nil {
				delete(c, k)
			} else {
				c[k] = val
			}
		}
		if _, err := v.Verify(key.sign(t, c)); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestJWKSRotation: a new key is picked up without a restart (a token
// naming an unknown kid fetches the set again, at most every
// UnknownKIDInterval however many such tokens come), and a key the
// provider dropped is refused once the set is fetched again.
func TestJWKSRotation(t *testing.T) {
	old, next := rsaKey(t, "old"), rsaKey(t, "new")
	p := newIdP(t)
	p.publish(old.jwk)
	v := jwksVerifier(t, p, VerifierConfig{Algorithm: "RS256"}, time.Hour, 200*time.Millisecond)
	oldToken := old.sign(t, claims(nil))
	if _, err := v.Verify(oldToken); err != nil {
		t.Fatal(err)
	}

	// Rotation: the provider publishes the new key and drops the old.
	p.publish(next.jwk)
	newToken := next.sign(t, claims(nil))
	eventually.True(t, 5*time.Second, "the new key picked up", func() bool { _, err := v.Verify(newToken); return err == nil })
	if _, err := v.Verify(oldToken); err == nil {
		t.Fatal("a token of the dropped key still verifies after the set was fetched again")
	}

	// A flood of made-up kids costs at most one fetch per interval.
	before := p.fetches.Load()
	start := time.Now()
	forged := rsaKey(t, "made-up")
	for range 200 {
		_, _ = v.Verify(forged.sign(t, claims(nil)))
	}
	fetched := p.fetches.Load() - before
	if allowed := int64(time.Since(start)/(200*time.Millisecond)) + 1; fetched > allowed {
		t.Fatalf("200 tokens of unknown kids fetched the set %d times in %s (at most %d)", fetched, time.Since(start).Round(time.Millisecond), allowed)
	}
}

// TestJWKSUnreachable: a key set that cannot be fetched makes Ready say
// so (and /readyz with it), and tokens fail closed.
func TestJWKSUnreachable(t *testing.T) {
	p := newIdP(t)
	p.down.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j, err := NewJWKS(ctx, JWKSConfig{URL: p.srv.URL, RefreshInterval: time.Hour, UnknownKIDInterval: time.Hour, HTTPTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifierFor(VerifierConfig{Algorithm: "RS256", JWKS: j})
	if err != nil {
		t.Fatal(err)
	}
	err = v.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), p.srv.URL) {
		t.Fatalf("Ready = %v", err)
	}
	key := rsaKey(t, "k1")
	if _, err := v.Verify(key.sign(t, claims(nil))); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("Verify with no keys: %v", err)
	}
	if _, err := NewVerifierFor(VerifierConfig{Algorithm: "RS256"}); err == nil {
		t.Fatal("RS256 without a key set was accepted")
	}
}

// TestJWKSRotationWithADistantProvider (found by an attack): a provider
// 20 ms away; the unknown-kid refresh was given 1 ms and never finished,
// so a rotation waited for the hourly refresh.
func TestJWKSRotationWithADistantProvider(t *testing.T) {
	old, next := rsaKey(t, "old"), rsaKey(t, "new")
	p := newIdP(t)
	p.delay.Store(int64(20 * time.Millisecond))
	p.publish(old.jwk)
	v := jwksVerifier(t, p, VerifierConfig{Algorithm: "RS256"}, time.Hour, 200*time.Millisecond)
	p.publish(next.jwk)
	tok := next.sign(t, claims(nil))
	eventually.True(t, 3*time.Second, "the new key picked up", func() bool { _, err := v.Verify(tok); return err == nil })
}

// TestJWKSBoundsAndErrors: a key set far larger than any real one is
// refused (not read whole), failed refreshes are reported, and a token
// naming critical extensions is refused.
func TestJWKSBoundsAndErrors(t *testing.T) {
	key := rsaKey(t, "k1")
	p := newIdP(t)
	p.publish(key.jwk)
	var failures atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j, err := NewJWKS(ctx, JWKSConfig{URL: p.srv.URL, RefreshInterval: 100 * time.Millisecond, UnknownKIDInterval: time.Hour, HTTPTimeout: time.Second,
		OnRefreshError: func(error) { failures.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifierFor(VerifierConfig{Algorithm: "RS256", JWKS: j})
	eventually.True(t, 5*time.Second, "keys", func() bool { return v.Ready(context.Background()) == nil })
	p.huge.Store(true)
	eventually.True(t, 5*time.Second, "the oversized key set refused and reported", func() bool { return failures.Load() > 0 })
	if _, err := v.Verify(key.sign(t, claims(nil))); err != nil {
		t.Fatalf("the keys held went on verifying: %v", err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	tok.Header["kid"] = "k1"
	tok.Header["crit"] = []string{"exp-ext"}
	raw, _ := tok.SignedString(key.private)
	if _, err := v.Verify(raw); !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "crit") {
		t.Fatalf("a token with crit: %v", err)
	}
}
