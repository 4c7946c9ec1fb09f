package api

import (
	"testing"

	"github.com/walcast/walcast/internal/pgtest"
)

// TestMain removes the throwaway PostgreSQL server pgtest starts when
// WALCAST_TEST_DATABASE_URL is unset.
func TestMain(m *testing.M) { pgtest.Main(m) }
