package redis_test

import (
	"testing"

	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }
