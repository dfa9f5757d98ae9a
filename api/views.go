package api

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// DateFormat is Quay's date format in API objects: RFC 1123 with a numeric
// zone, always UTC ("Fri, 10 May 2024 15:11:00 -0000").
const DateFormat = "Mon, 02 Jan 2006 15:04:05 -0000"

// FormatDate formats t as DateFormat in UTC.
func FormatDate(t time.Time) string { return t.UTC().Format(DateFormat) }

// optDate formats t, or gives nil (JSON null) for nil.
func optDate(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return FormatDate(*t)
}

// DefaultTagExpirationS is Quay's default time-machine window (14 days).
const DefaultTagExpirationS = 1209600

// avatarColors is the palette avatars pick from, by hash.
var avatarColors = []string{
	"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
	"#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
}

// Avatar is Quay's avatar object: a colour and a hash (of the email, or
// the name when there is none) for the UI to draw.
type Avatar struct {
	Name  string `json:"name"`
	Hash  string `json:"hash"`
	Color string `json:"color"`
	Kind  string `json:"kind"` // user, robot, org, team
}

func avatar(name, email, kind string) Avatar {
	src := email
	if src == "" {
		src = name
	}
	sum := sha256.Sum256([]byte(src))
	return Avatar{Name: name, Hash: hex.EncodeToString(sum[:]), Color: avatarColors[int(sum[0])%len(avatarColors)], Kind: kind}
}

// accountAvatar draws an account: organizations show as "user", as in
// Quay's organization object; robots as "robot".
func accountAvatar(a *store.Account) Avatar {
	kind := "user"
	if a.Kind == store.KindRobot {
		kind = "robot"
	}
	return avatar(a.Name, a.Email, kind)
}

// Name rules.
var (
	// namespaceRE: users and organizations, lowercase alphanumerics with
	// single separators, 2-255 characters, so that a namespace is a valid
	// first component of a /v2 repository name.
	namespaceRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	// teamRE: starts with a lowercase letter, then lowercase letters and digits.
	teamRE = regexp.MustCompile(`^[a-z][a-z0-9]+$`)
	// robotRE: a robot's short name.
	robotRE = regexp.MustCompile(`^[a-z][a-z0-9_]{1,254}$`)
	// repoNameRE: one component of a repository name.
	repoNameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
)

// ValidNamespaceName reports whether name may name a user or organization.
func ValidNamespaceName(name string) bool {
	return len(name) >= 2 && len(name) <= 255 && namespaceRE.MatchString(name)
}

// ValidTeamName reports whether name may name a team.
func ValidTeamName(name string) bool { return len(name) <= 255 && teamRE.MatchString(name) }

// ValidRobotShortName reports whether short may name a robot in a namespace.
func ValidRobotShortName(short string) bool { return robotRE.MatchString(short) }

// ReservedRepositoryNames collide with API sub-routes and are refused.
var ReservedRepositoryNames = map[string]bool{"build": true, "trigger": true, "tag": true, "notification": true}

// validRepoName reports whether name may name a repository through the API
// (one path component: the API addresses repositories as ns/name).
func validRepoName(name string) bool {
	return len(name) <= 255 && repoNameRE.MatchString(name)
}
