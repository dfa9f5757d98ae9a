package enginehost

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/worker/engine"
)

// Steps are one build of an engine, in the order Run takes them.
type Steps interface {
	// Configure writes the build's private configuration.
	Configure() error
	// Cleanup removes what the build left, whether configured or not.
	Cleanup()
	// AuthFile is where Pull and Push find berth's registry credentials.
	AuthFile() AuthFile
	// Pull copies base image img, the i-th of the request's.
	Pull(ctx context.Context, i int, img string) error
	// Build builds the image from the pulled bases.
	Build(ctx context.Context) error
	// Push pushes the image built to tag and returns its manifest digest.
	Push(ctx context.Context, tag string) (string, error)
}

// Run builds req in steps: it configures the build, pulls every base
// image, builds, and pushes to every tag, reporting each phase as it
// begins (req.OnPhase). The registry credentials are on disk only while a
// pull or push runs (AuthFile.With). name names the engine in errors.
func Run(ctx context.Context, name string, req engine.Request, s Steps) (engine.Result, error) {
	if len(req.Tags) == 0 {
		return engine.Result{}, fmt.Errorf("%s: no tags to push", name)
	}
	defer s.Cleanup()
	if err := s.Configure(); err != nil {
		return engine.Result{}, err
	}
	auth := s.AuthFile()
	if err := phase(ctx, req, engine.PhasePulling); err != nil {
		return engine.Result{}, err
	}
	for i, img := range req.BaseImages {
		if err := auth.With(ctx, func() error { return s.Pull(ctx, i, img) }); err != nil {
			return engine.Result{}, err
		}
	}
	if err := phase(ctx, req, engine.PhaseBuilding); err != nil {
		return engine.Result{}, err
	}
	if err := s.Build(ctx); err != nil {
		return engine.Result{}, err
	}
	if err := phase(ctx, req, engine.PhasePushing); err != nil {
		return engine.Result{}, err
	}
	res := engine.Result{Digests: map[string]string{}}
	for _, tag := range req.Tags {
		err := auth.With(ctx, func() error {
			d, err := s.Push(ctx, tag)
			res.Digests[tag] = d
			return err
		})
		if err != nil {
			return engine.Result{}, err
		}
	}
	return res, nil
}

// phase reports that p begins, unless ctx has ended.
func phase(ctx context.Context, req engine.Request, p engine.Phase) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if req.OnPhase == nil {
		return nil
	}
	return req.OnPhase(ctx, p)
}
