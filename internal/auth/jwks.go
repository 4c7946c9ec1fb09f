package auth

import (
	"context"
	"errors"
	"fmt"
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
}

// NewJWKS starts fetching c.URL; the refreshes end with ctx (keyfunc owns
// that goroutine). It does not wait for the first fetch: Ready says
// whether it worked.
func NewJWKS(ctx context.Context, c JWKSConfig) (*JWKS, error) {
	j := &JWKS{url: c.URL}
	noErr := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.URL}, keyfunc.Override{
		Client:                    &http.Client{Timeout: c.HTTPTimeout},
		HTTPTimeout:               c.HTTPTimeout,
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshInterval:           c.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(c.UnknownKIDInterval), 1),
		RateLimitWaitMax:          time.Millisecond, // a token is never held waiting for a refresh
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) { j.noteErr(err) }
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
