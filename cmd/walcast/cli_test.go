package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestHelpAndVersion: help in every spelling and on every command exits 0
// and lists the commands, the flags and the environment; version prints
// the build's version.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"serve", "--help"}, {"migrate", "-h"}, {"token", "--help"}, {"--config", "x.yaml", "--help"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, want := range []string{"serve", "migrate", "token", "version", "--config", "--log-level", "WALCAST_DATABASE_URL", "WALCAST_TRUSTED_PROXIES"} {
			if !strings.Contains(out.String(), want) {
				t.Fatalf("%v: help lacks %s:\n%s", args, want, out.String())
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "walcast ") || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"nope"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("an unknown command was accepted")
	}
}
