package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker"
)

// runWorker is `berth worker`: build one job for the build manager, then
// exit. Executors start it; every flag also comes from the environment so
// that secrets (the registration token) need not appear in a process list.
func runWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: berth worker [flags]\n\nBuild one job for a berth build manager and exit.\n\nflags (each also from the environment variable shown):\n")
		fs.PrintDefaults()
	}
	insecureDefault, _ := strconv.ParseBool(os.Getenv("BERTH_MANAGER_INSECURE"))
	var (
		manager     = fs.String("manager", os.Getenv("BERTH_MANAGER_ADDR"), "build manager gRPC address host:port (BERTH_MANAGER_ADDR)")
		token       = fs.String("token", "", "registration token (BERTH_REGISTRATION_TOKEN; prefer the environment)")
		insecure    = fs.Bool("insecure", insecureDefault, "plain-text gRPC to the manager (BERTH_MANAGER_INSECURE)")
		caFile      = fs.String("ca-file", os.Getenv("BERTH_MANAGER_CA_FILE"), "PEM CA of the manager's TLS certificate (BERTH_MANAGER_CA_FILE; or the PEM itself in BERTH_MANAGER_CA_PEM)")
		workDir     = fs.String("work-dir", os.Getenv("BERTH_WORK_DIR"), "directory for the source and scratch files of this build (BERTH_WORK_DIR)")
		storageRoot = fs.String("storage-root", os.Getenv("BERTH_STORAGE_ROOT"), "image storage of this build (BERTH_STORAGE_ROOT)")
		logLevel    = fs.String("log-level", os.Getenv("BERTH_LOG_LEVEL"), "debug, info, warn or error (BERTH_LOG_LEVEL; default info)")
		check       = fs.Bool("check", false, "check that this machine can run sandboxed builds, say which check fails, and exit (executors run it at start)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check {
		return checkWorker(ctx, *workDir)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("worker: unexpected arguments %q", fs.Args())
	}
	if *logLevel == "" {
		*logLevel = "info"
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	if *token == "" {
		*token = os.Getenv("BERTH_REGISTRATION_TOKEN")
	}
	// The server hands its outbound network policy down through the
	// environment: archive URLs and git servers are checked as it would.
	policy, err := egress.FromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	cfg := worker.Config{
		ManagerAddr:       *manager,
		RegistrationToken: *token,
		Insecure:          *insecure,
		Logger:            log,
		Egress:            policy,
	}
	switch {
	case *caFile != "":
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("worker: read CA file: %w", err)
		}
		cfg.CAPEM = pem
	case os.Getenv("BERTH_MANAGER_CA_PEM") != "":
		cfg.CAPEM = []byte(os.Getenv("BERTH_MANAGER_CA_PEM"))
	}
	var missing []string
	if cfg.ManagerAddr == "" {
		missing = append(missing, "--manager")
	}
	if cfg.RegistrationToken == "" {
		missing = append(missing, "--token")
	}
	if *workDir == "" {
		missing = append(missing, "--work-dir")
	}
	if *storageRoot == "" {
		missing = append(missing, "--storage-root")
	}
	if len(missing) > 0 {
		fs.Usage()
		return fmt.Errorf("worker: missing %v", missing)
	}
	if cfg.WorkDir, err = filepath.Abs(*workDir); err != nil {
		return err
	}
	if cfg.StorageRoot, err = filepath.Abs(*storageRoot); err != nil {
		return err
	}
	log.Info("worker starting", "manager", cfg.ManagerAddr, "uid", os.Getuid(), "work_dir", cfg.WorkDir, "storage_root", cfg.StorageRoot)
	err = worker.Run(ctx, cfg)
	if errors.Is(err, worker.ErrStopped) {
		// The manager ended the build (cancelled): a normal end.
		log.Info("worker stopped by the build manager")
		return nil
	}
	return err
}

// checkWorker is `berth worker --check`: the engines' checks that this
// machine can give builds their sandbox, run where a build would run.
func checkWorker(ctx context.Context, workDir string) error {
	if workDir == "" {
		workDir = os.TempDir()
	}
	if err := worker.Check(ctx, worker.Config{}, workDir); err != nil {
		return err
	}
	fmt.Println("worker check: builds can be sandboxed here")
	return nil
}
