package auth

import (
	"errors"
	"fmt"
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

// Verifier checks tokens signed with a shared secret.
type Verifier struct {
	secret    []byte
	algorithm string
	leeway    time.Duration
	now       func() time.Time
}

// NewVerifier returns a Verifier for HMAC tokens with the given algorithm
// (HS256, HS384 or HS512).
func NewVerifier(secret []byte, algorithm string, leeway time.Duration) (*Verifier, error) {
	switch algorithm {
	case "HS256", "HS384", "HS512":
	default:
		return nil, fmt.Errorf("jwt algorithm %q is not supported; use HS256, HS384 or HS512", algorithm)
	}
	if len(secret) < 16 {
		return nil, errors.New("jwt secret must be at least 16 bytes")
	}
	return &Verifier{secret: secret, algorithm: algorithm, leeway: leeway, now: time.Now}, nil
}

// WithClock returns a copy of v that reads time from now.
func (v *Verifier) WithClock(now func() time.Time) *Verifier {
	c := *v
	c.now = now
	return &c
}

// Verify checks the signature, algorithm, expiry and subject of raw.
func (v *Verifier) Verify(raw string) (Claims, error) {
	if raw == "" {
		return Claims{}, ErrNoToken
	}
	if len(raw) > 8192 {
		return Claims{}, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	var rc jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &rc, func(*jwt.Token) (any, error) { return v.secret, nil },
		jwt.WithValidMethods([]string{v.algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, ErrTokenExpired
	case err != nil:
		return Claims{}, fmt.Errorf("%w: %s", ErrTokenInvalid, describe(err))
	}
	if !IsUUID(rc.Subject) {
		return Claims{}, fmt.Errorf("%w: sub is not a user id", ErrTokenInvalid)
	}
	// The WAL carries uuids in lowercase; revocations match on that form.
	return Claims{UserID: strings.ToLower(rc.Subject), ExpiresAt: rc.ExpiresAt.Time}, nil
}

// describe names the cause without echoing any part of the token.
func describe(err error) string {
	switch {
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
