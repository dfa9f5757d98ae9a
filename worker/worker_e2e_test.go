package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/testenv"
	// The engine a worker given no engines makes.
	_ "github.com/berth-dev/berth/worker/engine/buildah"
)

// TestRunBuildah runs the worker with the real buildah engine against a
// real registry, through the fake manager.
func TestRunBuildah(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("a worker never runs as root (its sandbox maps the build user's subordinate IDs): test/builds runs the real worker as a build user")
	}
	testenv.RequireTools(t, "buildah", "skopeo")
	creds := testenv.Creds{Username: "builder", Password: "pw-e2e"}
	reg := testenv.StartDistributionAuth(t, creds)
	base := testenv.BusyboxImage(t, reg.Host, "lib/busybox", creds)

	job := func(dockerfile string) (*pb.Job, []byte) {
		j := &pb.Job{
			BuildId:          "e2e",
			Source:           &pb.Job_Upload{Upload: true},
			Registry:         reg.Host,
			Repository:       "myorg/app",
			Tags:             []string{"v1", "latest"},
			RegistryInsecure: true,
			BuildArgs:        map[string]string{"BASE": base, "WHO": "berth"},
			TimeoutSeconds:   300,
		}
		return j, tarGz(t, map[string]string{"Dockerfile": dockerfile, "hello.txt": "hello from the context\n"})
	}

	t.Run("Success", func(t *testing.T) {
		j, upload := job("ARG BASE\nFROM $BASE\nARG WHO\nCOPY hello.txt /hello.txt\nRUN echo \"built by $WHO\" > /built.txt\n")
		m := newFakeManager(t, j, upload)
		m.creds = &pb.RegistryCredentials{Registry: reg.Host, Username: creds.Username, Password: creds.Password, ExpiresInSeconds: 900}
		cfg := m.config(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		if err := Run(ctx, cfg); err != nil {
			t.Fatalf("Run: %v", err)
		}
		t.Logf("build took %v", time.Since(start))
		d := m.finish.GetSuccess().GetDigests()
		if len(d) != 2 || !strings.HasPrefix(d["v1"], "sha256:") || d["v1"] != d["latest"] {
			t.Fatalf("finish = %v", m.finish)
		}
		commands := 0
		for _, e := range m.entries(t) {
			if e.GetType() == pb.LogType_LOG_TYPE_COMMAND {
				commands++
			}
		}
		if commands < 4 {
			t.Errorf("%d command entries, want one per step", commands)
		}
		rootfs := testenv.ExtractImage(t, reg.Host+"/myorg/app@"+d["v1"], creds)
		for name, want := range map[string]string{"hello.txt": "hello from the context\n", "built.txt": "built by berth\n"} {
			got, err := os.ReadFile(filepath.Join(rootfs, name))
			if err != nil || string(got) != want {
				t.Errorf("/%s = %q, %v; want %q", name, got, err, want)
			}
		}
	})

	t.Run("FailingRun", func(t *testing.T) {
		j, upload := job("ARG BASE\nFROM $BASE\nRUN echo going down && exit 7\n")
		m := newFakeManager(t, j, upload)
		m.creds = &pb.RegistryCredentials{Registry: reg.Host, Username: creds.Username, Password: creds.Password, ExpiresInSeconds: 900}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := Run(ctx, m.config(t)); err != nil {
			t.Fatalf("Run: %v", err)
		}
		be := m.finish.GetError()
		if be.GetCode() != "build-step" || be.GetRetryable() || !strings.Contains(be.GetMessage(), "exit status 7") {
			t.Fatalf("finish = %v, want a build-step error with exit status 7", m.finish)
		}
		text := ""
		for _, e := range m.entries(t) {
			text += e.GetMessage() + "\n"
		}
		if !strings.Contains(text, "\ngoing down\n") {
			t.Errorf("the failing step's output is not in the log:\n%s", text)
		}
	})
}
