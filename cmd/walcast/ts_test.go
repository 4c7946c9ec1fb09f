package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestTypeScriptDeclarations: the client package's declarations
// (web/walcast-client.d.ts, web/tanstack.d.ts) compile with tsc --strict
// against the real @tanstack/query-core, and type a frontend's use of
// them (web/typecheck.ts, whose @ts-expect-error lines must be errors).
func TestTypeScriptDeclarations(t *testing.T) {
	t.Parallel()
	tsc := "../../web/node_modules/.bin/tsc"
	if _, err := os.Stat(tsc); err != nil {
		t.Fatal("web/node_modules is missing: make test runs npm ci in web/")
	}
	out, err := exec.Command(tsc, "-p", "../../web/tsconfig.json").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}
