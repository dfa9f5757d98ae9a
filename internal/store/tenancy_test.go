package store

import "testing"

func TestRoleRank(t *testing.T) {
	for _, tc := range []struct {
		role Role
		want int
	}{
		{"", 0},
		{"owner", 0},
		{"Read", 0},
		{RoleRead, 1},
		{RoleWrite, 2},
		{RoleAdmin, 3},
	} {
		if got := tc.role.Rank(); got != tc.want {
			t.Errorf("Role(%q).Rank() = %d, want %d", tc.role, got, tc.want)
		}
	}
}
