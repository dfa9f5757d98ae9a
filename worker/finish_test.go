package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
)

// unreachableManager answers every Finish with UNAVAILABLE.
type unreachableManager struct {
	pb.BuildManagerClient
	calls chan struct{}
}

func (m unreachableManager) Finish(context.Context, *pb.FinishRequest, ...grpc.CallOption) (*pb.FinishResponse, error) {
	m.calls <- struct{}{}
	return nil, status.Error(codes.Unavailable, "manager down")
}

// finish retries an unreachable manager for ManagerTimeout, but stops
// retrying as soon as its context ends.
func TestFinishStopsRetryingWhenCancelled(t *testing.T) {
	m := unreachableManager{calls: make(chan struct{}, 100)}
	j := &jobRun{cfg: Config{ManagerTimeout: time.Minute}, client: m}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- j.finish(ctx, &pb.FinishRequest{JobToken: "t"}) }()
	<-m.calls
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("finish = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("finish kept retrying after its context ended")
	}
}
