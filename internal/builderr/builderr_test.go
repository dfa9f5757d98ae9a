package builderr

import (
	"errors"
	"fmt"
	"testing"
)

func TestUserErrorSurvivesWrapping(t *testing.T) {
	cause := errors.New("exit status 3")
	err := fmt.Errorf("build: %w", &UserError{Code: CodeBuildStep, Message: "the step failed", Err: cause})
	ue, ok := AsUserError(err)
	if !ok || ue.Code != CodeBuildStep || ue.Error() != "the step failed" {
		t.Fatalf("AsUserError = %v, %v", ue, ok)
	}
	if !errors.Is(err, cause) {
		t.Error("the underlying error is lost")
	}
	if _, ok := AsUserError(errors.New("disk full")); ok {
		t.Error("a plain error is a user error")
	}
}

func TestErrorf(t *testing.T) {
	ue := Errorf(CodeGit, "branch %q not found", "main")
	if ue.Code != CodeGit || ue.Message != `branch "main" not found` || ue.Err != nil {
		t.Errorf("Errorf = %+v", ue)
	}
}
