package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// ErrNoKey is a token whose key the identity provider's JWKS does not have.
var ErrNoKey = errors.New("no matching key")

// JWKS is the identity provider's key set (Auth0, Clerk, Keycloak,
// Supabase Auth, Cognito publish one), fetched with keyfunc: refreshed
// every RefreshInterval, and at most every UnknownKIDInterval when a token
// names a key it does not have (a rotation picked up without a restart;
// a flood of made-up kids costs one fetch per interval).
type JWKS struct {
	url string
	kf  keyfunc.Keyfunc
	// unknownKID gates the refreshes a token of an unknown kid triggers,
	// without waiting: one per interval fetches, the others are refused.
	unknownKID *rate.Limiter
	interval   time.Duration

	mu      sync.Mutex
	lastErr error
	lastAt  time.Time
}

// JWKSConfig configures NewJWKS.
type JWKSConfig struct {
	URL                string
	RefreshInterval    time.Duration
	UnknownKIDInterval time.Duration
	HTTPTimeout        time.Duration
	// OnRefreshError, when set, is told of every failed fetch (after the
	// first success too: the keys held go on verifying, but the operator
	// must hear of it).
	OnRefreshError func(err error)
}

// maxJWKSBytes bounds a key set's body: a real one is a few kilobytes.
const maxJWKSBytes = 1 << 20

// limitedTransport cuts a response body at maxJWKSBytes.
type limitedTransport struct{ http.RoundTripper }

func (l limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.RoundTripper.RoundTrip(req)
	if err == nil {
		resp.Body = limitedBody{io.LimitReader(resp.Body, maxJWKSBytes+1), resp.Body}
	}
	return resp, err
}

type limitedBody struct {
	r io.Reader
	io.Closer
}

func (b limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if lr, ok := b.r.(*io.LimitedReader); ok && lr.N <= 0 {
		return n, fmt.Errorf("the key set is larger than %d bytes", maxJWKSBytes)
	}
	return n, err
}

// NewJWKS starts fetching c.URL; the refreshes end with ctx (keyfunc owns
// that goroutine). It does not wait for the first fetch: Ready says
// whether it worked.
func NewJWKS(ctx context.Context, c JWKSConfig) (*JWKS, error) {
	j := &JWKS{url: c.URL, unknownKID: rate.NewLimiter(rate.Every(c.UnknownKIDInterval), 1), interval: c.UnknownKIDInterval}
	noErr := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.URL}, keyfunc.Override{
		Client:                    &http.Client{Timeout: c.HTTPTimeout, Transport: limitedTransport{http.DefaultTransport}},
		HTTPTimeout:               c.HTTPTimeout,
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshInterval:           c.RefreshInterval,
		// The rate is walcast's own (j.unknownKID, never waited on); keyfunc
		// bounds the refresh itself by RateLimitWaitMax, not only its wait
		// for the limiter, so that must leave room for a fetch.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		RateLimitWaitMax:  c.HTTPTimeout,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				j.noteErr(err)
				if c.OnRefreshError != nil {
					c.OnRefreshError(err)
				}
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", c.URL, err)
	}
	j.kf = kf
	return j, nil
}

func (j *JWKS) noteErr(err error) {
	j.mu.Lock()
	j.lastErr, j.lastAt = err, time.Now()
	j.mu.Unlock()
}

func (j *JWKS) keyfunc(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if !j.has(kid) && !j.unknownKID.Allow() {
		return nil, fmt.Errorf("%w: kid %q is not in the key set, fetched again at most every %s", ErrNoKey, kid, j.interval)
	}
	k, err := j.kf.Keyfunc(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoKey, err)
	}
	return k, nil
}

// Ready is nil while the key set holds keys; else it says why not (the
// last fetch's error).
func (j *JWKS) Ready(ctx context.Context) error {
	keys, err := j.kf.Storage().KeyReadAll(ctx)
	if err == nil && len(keys) > 0 {
		return nil
	}
	j.mu.Lock()
	last := j.lastErr
	j.mu.Unlock()
	if last == nil {
		last = err
	}
	if last == nil {
		last = errors.New("it holds no key")
	}
	return fmt.Errorf("the identity provider's JWKS %s could not be fetched: %v", j.url, last)
}

// has reports whether the key set holds kid, without fetching.
func (j *JWKS) has(kid string) bool {
	keys, err := j.kf.Storage().KeyReadAll(context.Background())
	if err != nil {
		return false
	}
	for _, k := range keys {
		if k.Marshal().KID == kid {
			return true
		}
	}
	return false
}
