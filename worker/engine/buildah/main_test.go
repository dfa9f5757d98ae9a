package buildah

import (
	"testing"

	"github.com/berth-dev/berth/worker/engine/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }
