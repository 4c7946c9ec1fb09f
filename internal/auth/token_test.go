package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	secret = "0123456789abcdef0123456789abcdef"
	user   = "11111111-1111-4111-8111-111111111111"
)

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	v, err := NewVerifier([]byte(secret), "HS256", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v = v.WithClock(func() time.Time { return now })
	exp := now.Add(time.Hour).Unix()
	good := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user, "exp": exp})
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name string
		tok  string
		err  error
	}{
		{"valid", good, nil},
		{"uppercase uuid sub", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": strings.ToUpper(user), "exp": exp}), nil},
		{"empty", "", ErrNoToken},
		{"garbage", "abc.def", ErrTokenInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user, "exp": now.Add(-time.Minute).Unix()}), ErrTokenExpired},
		{"expired within leeway is valid", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user, "exp": now.Add(-2 * time.Second).Unix()}), nil},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user, "exp": exp, "nbf": now.Add(time.Hour).Unix()}), ErrTokenInvalid},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user}), ErrTokenInvalid},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789"), jwt.MapClaims{"sub": user, "exp": exp}), ErrTokenInvalid},
		{"wrong algorithm", sign(t, jwt.SigningMethodHS512, []byte(secret), jwt.MapClaims{"sub": user, "exp": exp}), ErrTokenInvalid},
		{"alg none", b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"`+user+`","exp":9999999999}`) + ".", ErrTokenInvalid},
		{"missing sub", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp}), ErrTokenInvalid},
		{"non-uuid sub", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "admin", "exp": exp}), ErrTokenInvalid},
		{"tampered payload", strings.Split(good, ".")[0] + "." + b64(`{"sub":"`+user+`","exp":9999999999}`) + "." + strings.Split(good, ".")[2], ErrTokenInvalid},
		{"huge", strings.Repeat("a", 10000), ErrTokenInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims, err := v.Verify(c.tok)
			if c.err == nil {
				if err != nil || claims.UserID != user {
					t.Fatalf("Verify = %+v, %v", claims, err)
				}
				return
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if c.tok != "" && len(c.tok) > 20 && strings.Contains(err.Error(), c.tok[len(c.tok)-20:]) {
				t.Fatal("error echoes the token")
			}
		})
	}
}

func TestNewVerifierRejects(t *testing.T) {
	if _, err := NewVerifier([]byte(secret), "RS256", 0); err == nil {
		t.Error("RS256 accepted")
	}
	if _, err := NewVerifier([]byte(secret), "none", 0); err == nil {
		t.Error("none accepted")
	}
	if _, err := NewVerifier([]byte("short"), "HS256", 0); err == nil {
		t.Error("short secret accepted")
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		user: true, strings.ToUpper(user): true, "": false, "11111111111141118111111111111111": false,
		"11111111-1111-4111-8111-11111111111g": false, "11111111-1111-4111-8111-1111111111111": false,
		"11111111_1111-4111-8111-111111111111": false,
	} {
		if IsUUID(s) != want {
			t.Errorf("IsUUID(%q) != %v", s, want)
		}
	}
}

func FuzzVerify(f *testing.F) {
	v, _ := NewVerifier([]byte(secret), "HS256", 0)
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		if c, err := v.Verify(tok); err == nil && !IsUUID(c.UserID) {
			t.Fatalf("accepted %q with sub %q", tok, c.UserID)
		}
	})
}
