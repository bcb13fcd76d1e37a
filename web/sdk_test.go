package web_test

import (
	"os"
	"os/exec"
	"testing"
)

// npmCI installs the pinned devDependencies (package-lock.json) when node_modules is missing, so a
// fresh clone needs nothing but Node.js and the npm registry.
func npmCI(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("node_modules/typescript/bin/tsc"); err == nil {
		return
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm is missing (%v): install Node.js 20 or newer with npm", err)
	}
	out, err := exec.Command("npm", "ci", "--no-audit", "--no-fund").CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
}

// TestSDKTypes checks the SDK and the page with the TypeScript compiler (tsc --checkJs, strict): the
// JSDoc types are the SDK's typed API.
func TestSDKTypes(t *testing.T) {
	npmCI(t)
	out, err := exec.Command("node", "node_modules/typescript/bin/tsc", "-p", "jsconfig.json").CombinedOutput()
	if err != nil {
		t.Fatalf("tsc --checkJs: %v\n%s", err, out)
	}
}

// TestSDKNode runs the SDK's unit tests (web/test, Node's test runner): backoff bounds, the close-code
// map against docs/protocol.md, dedupe, watches, and resume and token refusal against the real server.
func TestSDKNode(t *testing.T) {
	s := liveStack(t)
	cmd := exec.Command("node", "--experimental-websocket", "--test", "--test-reporter=spec", "test/")
	cmd.Env = append(os.Environ(), "LIVEDROPS_URL="+s.base, "NODE_NO_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
}
