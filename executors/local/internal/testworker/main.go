// Command testworker is a stand-in for `berth worker` in the executor
// tests while the real worker is not built: it speaks the real worker
// protocol's lifecycle (Register with the token from the environment,
// heartbeats, FetchContext for an uploaded context, Finish) and exits the
// way a worker must: when the manager says stop, when the context cannot
// be fetched, on SIGTERM, or when the manager is unreachable for 10 s.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/buildmanager/workerpb"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "worker" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	manager := fs.String("manager", os.Getenv("BERTH_MANAGER_ADDR"), "build manager address")
	token := fs.String("token", os.Getenv("BERTH_REGISTRATION_TOKEN"), "registration token")
	plain := fs.Bool("insecure", false, "plain-text gRPC")
	workDir := fs.String("work-dir", "", "work directory")
	storageRoot := fs.String("storage-root", "", "storage root")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *manager, *token, *plain, *workDir, *storageRoot); err != nil {
		slog.Error("testworker failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, manager, token string, plain bool, workDir, storageRoot string) error {
	if !plain {
		return errors.New("testworker speaks plain-text gRPC only")
	}
	// A worker must be able to write where it was told to work.
	for _, d := range []string{workDir, storageRoot} {
		if err := os.WriteFile(filepath.Join(d, "testworker"), []byte("ok"), 0o600); err != nil {
			return err
		}
	}
	conn, err := grpc.NewClient(manager, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := workerpb.NewBuildManagerClient(conn)
	info := fmt.Sprintf("testworker pid=%d uid=%d", os.Getpid(), os.Getuid())
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	job, err := client.Register(rctx, &workerpb.RegisterRequest{RegistrationToken: token, WorkerInfo: info},
		grpc.WaitForReady(true))
	cancel()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	slog.Info("registered", "build_id", job.GetBuildId())

	fetchFailed := make(chan error, 1)
	if job.GetUpload() {
		go func() { fetchFailed <- fetch(ctx, client, job.GetJobToken()) }()
	}
	lastContact := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-fetchFailed:
			if ctx.Err() != nil {
				return nil
			}
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, ferr := client.Finish(fctx, &workerpb.FinishRequest{JobToken: job.GetJobToken(),
				Result: &workerpb.FinishRequest_Error{Error: &workerpb.BuildError{
					Code: "context", Message: fmt.Sprint(err), Retryable: true}}})
			return errors.Join(err, ferr)
		case <-tick.C:
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := client.Heartbeat(hctx, &workerpb.HeartbeatRequest{JobToken: job.GetJobToken()})
		cancel()
		switch {
		case err == nil && resp.GetStop():
			slog.Info("told to stop")
			return nil
		case err == nil:
			lastContact = time.Now()
		case time.Since(lastContact) > 10*time.Second:
			return fmt.Errorf("lost the build manager: %w", err)
		}
	}
}

// fetch reads the uploaded context to its end; the tests' manager holds
// it open until it wants the worker to fail.
func fetch(ctx context.Context, client workerpb.BuildManagerClient, jobToken string) error {
	stream, err := client.FetchContext(ctx, &workerpb.FetchContextRequest{JobToken: jobToken})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				<-ctx.Done()
				return nil
			}
			return err
		}
	}
}
