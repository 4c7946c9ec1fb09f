package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what walcast reads from a verified token.
type Claims struct {
	UserID    string
	ExpiresAt time.Time
}

// Token errors, for callers that choose a response by cause.
var (
	ErrNoToken      = errors.New("no token")
	ErrTokenExpired = errors.New("token expired")
	ErrTokenInvalid = errors.New("token invalid")
)

// Verifier checks tokens: signed with a shared secret (HS256/384/512),
// or with a key of the identity provider's JWKS (RS*, PS*, ES*, EdDSA),
// always with the one configured algorithm.
type Verifier struct {
	secret    []byte
	algorithm string
	leeway    time.Duration
	userClaim string
	issuer    string
	audience  string
	jwks      *JWKS // nil: the secret verifies
	now       func() time.Time
}

// VerifierConfig configures NewVerifierFor.
type VerifierConfig struct {
	// Algorithm is the only algorithm accepted.
	Algorithm string
	// Secret verifies HS* tokens.
	Secret []byte
	// JWKS verifies the asymmetric algorithms (NewJWKS).
	JWKS *JWKS
	// UserClaim names the claim that holds the user id ("sub" when empty).
	UserClaim string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	Leeway           time.Duration
}

// hmacAlgorithms verify with the secret, the others with JWKS keys.
var (
	hmacAlgorithms  = []string{"HS256", "HS384", "HS512"}
	asymmetricAlgos = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// NewVerifier returns a Verifier for HMAC tokens with the given algorithm
// (HS256, HS384 or HS512) whose sub is the user id.
func NewVerifier(secret []byte, algorithm string, leeway time.Duration) (*Verifier, error) {
	return NewVerifierFor(VerifierConfig{Algorithm: algorithm, Secret: secret, Leeway: leeway})
}

// NewVerifierFor returns a Verifier for c.
func NewVerifierFor(c VerifierConfig) (*Verifier, error) {
	switch {
	case slices.Contains(hmacAlgorithms, c.Algorithm):
		if len(c.Secret) < 16 {
			return nil, errors.New("jwt secret must be at least 16 bytes")
		}
	case slices.Contains(asymmetricAlgos, c.Algorithm):
		if c.JWKS == nil {
			return nil, fmt.Errorf("jwt algorithm %s needs auth.jwks_url: its keys come from the identity provider", c.Algorithm)
		}
	default:
		return nil, fmt.Errorf("jwt algorithm %q is not supported; use one of %s", c.Algorithm, strings.Join(append(slices.Clone(hmacAlgorithms), asymmetricAlgos...), ", "))
	}
	v := &Verifier{secret: c.Secret, algorithm: c.Algorithm, leeway: c.Leeway, userClaim: c.UserClaim, issuer: c.Issuer, audience: c.Audience, now: time.Now}
	if v.userClaim == "" {
		v.userClaim = "sub"
	}
	if !slices.Contains(hmacAlgorithms, c.Algorithm) {
		v.jwks = c.JWKS
	}
	return v, nil
}

// WithClock returns a copy of v that reads time from now.
func (v *Verifier) WithClock(now func() time.Time) *Verifier {
	c := *v
	c.now = now
	return &c
}

// Ready reports why tokens cannot be verified now (the JWKS could not be
// fetched), or nil.
func (v *Verifier) Ready(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.Ready(ctx)
}

// Verify checks the signature, algorithm, expiry, issuer, audience and
// user claim of raw.
func (v *Verifier) Verify(raw string) (Claims, error) {
	if raw == "" {
		return Claims{}, ErrNoToken
	}
	if len(raw) > 8192 {
		return Claims{}, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	keyfunc := func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 §4.1.11: extensions walcast does not understand
			// must not be ignored.
			return nil, errCritical
		}
		if v.jwks != nil {
			return v.jwks.keyfunc(t)
		}
		return v.secret, nil
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{v.algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
	}
	if v.issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	if v.audience != "" {
		opts = append(opts, jwt.WithAudience(v.audience))
	}
	mc := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, mc, keyfunc, opts...)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, ErrTokenExpired
	case err != nil:
		return Claims{}, fmt.Errorf("%w: %s", ErrTokenInvalid, describe(err))
	}
	user, _ := mc[v.userClaim].(string)
	if !IsUUID(user) {
		return Claims{}, fmt.Errorf("%w: %s is not a user id", ErrTokenInvalid, v.userClaim)
	}
	exp, err := mc.GetExpirationTime()
	if err != nil || exp == nil {
		return Claims{}, fmt.Errorf("%w: exp missing", ErrTokenInvalid)
	}
	// The WAL carries uuids in lowercase; revocations match on that form.
	return Claims{UserID: strings.ToLower(user), ExpiresAt: exp.Time}, nil
}

var errCritical = errors.New("crit header")

// describe names the cause without echoing any part of the token.
func describe(err error) string {
	switch {
	case errors.Is(err, errCritical):
		return "it names critical extensions (crit), which walcast does not support"
	case errors.Is(err, ErrNoKey):
		return "no key of the identity provider matches (kid)"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable (algorithm not allowed)"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "exp missing"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "rejected"
}

// Issue signs a token for userID valid for ttl, for development and tests.
func Issue(secret []byte, algorithm, userID string, ttl time.Duration, now time.Time) (string, error) {
	method := jwt.GetSigningMethod(algorithm)
	if method == nil {
		return "", fmt.Errorf("unknown jwt algorithm %q", algorithm)
	}
	tok := jwt.NewWithClaims(method, jwt.RegisteredClaims{
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	return tok.SignedString(secret)
}

// IsUUID reports whether s is a UUID in its canonical 36-character form.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
