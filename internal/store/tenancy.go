package store

import (
	"context"
	"time"
)

// TeamRole is an organization-wide role held by a team (Quay's team roles).
type TeamRole string

const (
	// TeamMember inherits the permissions set for the team.
	TeamMember TeamRole = "member"
	// TeamCreator is a member who may also create repositories in the organization.
	TeamCreator TeamRole = "creator"
	// TeamAdmin administers the whole organization.
	TeamAdmin TeamRole = "admin"
)

// Role is a permission on one repository.
type Role string

const (
	RoleRead  Role = "read"
	RoleWrite Role = "write"
	RoleAdmin Role = "admin"
)

// Rank orders repository roles from weakest to strongest: read 1, write 2,
// admin 3; any other value ("" for none, or an unknown role) is 0.
func (r Role) Rank() int {
	switch r {
	case RoleRead:
		return 1
	case RoleWrite:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// OwnersTeam is the team every organization starts with, role admin.
const OwnersTeam = "owners"

// OrgSettings are the organization-only fields of an account.
type OrgSettings struct {
	InvoiceEmail        bool
	InvoiceEmailAddress string
	// TagExpirationS is the time-machine window in seconds (Quay default 1209600).
	TagExpirationS int64
}

// Team is a team inside an organization.
type Team struct {
	ID          int64
	OrgID       int64
	Name        string
	Description string
	Role        TeamRole
	CreatedAt   time.Time
}

// TeamMembership is one member of a team, or one pending invitation (then
// Account is nil and Email is set).
type TeamMembership struct {
	TeamID  int64
	Account *Account
	Email   string
	Invited bool
	// InviteToken identifies a pending invitation (hashed at rest is not
	// needed: it grants only joining the team, after login).
	InviteToken string
}

// RepoPermission grants Role on a repository to an account (user or robot)
// or a team; exactly one of AccountID and TeamID is non-zero.
type RepoPermission struct {
	RepoID    int64
	AccountID int64
	TeamID    int64
	Role      Role
	// Filled on reads for display.
	Account *Account
	Team    *Team
	Repo    *Repository
}

// Prototype is an organization's default permission ("prototype"): when
// ActivatingUserID creates a repository (0: anyone does), the delegate
// (an account or a team) gets Role on it.
type Prototype struct {
	ID                string // UUID
	OrgID             int64
	ActivatingUserID  int64
	DelegateAccountID int64
	DelegateTeamID    int64
	Role              Role
}

// RobotInfo is the robot-only data of a robot account.
type RobotInfo struct {
	Description          string
	UnstructuredMetadata string // JSON object or ""
	// TokenEnc is the robot's token, encrypted with the server's secret key
	// (admins may read it back, so it cannot be a one-way hash).
	TokenEnc     []byte
	LastAccessed *time.Time
}

// OAuthApplication is an OAuth client registered under an organization.
type OAuthApplication struct {
	ID              int64
	OrgID           int64
	ClientID        string
	ClientSecretEnc []byte
	Name            string
	ApplicationURI  string
	RedirectURI     string
	Description     string
	AvatarEmail     string
	CreatedAt       time.Time
}

// AccessToken is an OAuth access token (or one made by `berth admin token
// create`, then ApplicationID is 0). Only a hash of the token is stored.
type AccessToken struct {
	ID            int64
	ApplicationID int64
	AccountID     int64
	TokenHash     string // hex SHA-256 of the token
	Scopes        []string
	CreatedAt     time.Time
	ExpiresAt     *time.Time
	// CredentialEpoch is the account's credential epoch when the token was
	// made: once the epoch rose (password changed, account disabled), the
	// token no longer works.
	CredentialEpoch uint64
	// ClientID, ApplicationName and ApplicationOrg describe the token's
	// OAuth application; ListAccessTokens fills them ("" for none).
	ClientID        string
	ApplicationName string
	ApplicationOrg  string
}

// Session is a web login. Only a hash of the cookie value is stored.
type Session struct {
	IDHash    string
	AccountID int64
	CSRFToken string
	CreatedAt time.Time
	ExpiresAt time.Time
	// CredentialEpoch is the account's credential epoch when the session
	// began, as for AccessToken.
	CredentialEpoch uint64
}

// TenancyStore holds organizations, teams, robots, permissions, OAuth
// applications and tokens, and web sessions. The same rules as Store apply:
// ErrNotFound / ErrConflict wrapped, safe for concurrent use.
type TenancyStore interface {
	// Accounts.

	ListAccounts(ctx context.Context, kind AccountKind) ([]Account, error)
	// UpdateAccount writes Email, PasswordHash, Superuser and Enabled.
	UpdateAccount(ctx context.Context, a *Account) error
	// DeleteAccount removes an account and everything it owns: for a user or
	// an organization its repositories, robots, teams, memberships,
	// permissions, tokens and sessions.
	DeleteAccount(ctx context.Context, id int64) error
	GetOrgSettings(ctx context.Context, orgID int64) (*OrgSettings, error)
	PutOrgSettings(ctx context.Context, orgID int64, s *OrgSettings) error
	// CreateOrganization creates the organization account, its "owners"
	// team (role admin) and puts creatorID in it, in one transaction.
	CreateOrganization(ctx context.Context, org *Account, creatorID int64) error

	// Teams.

	// PutTeam creates or updates (by OrgID+Name) a team; created reports which.
	PutTeam(ctx context.Context, t *Team) (created bool, err error)
	GetTeam(ctx context.Context, orgID int64, name string) (*Team, error)
	ListTeams(ctx context.Context, orgID int64) ([]Team, error)
	DeleteTeam(ctx context.Context, id int64) error
	// AddTeamMember adds an account (user or robot) to a team (idempotent).
	AddTeamMember(ctx context.Context, teamID, accountID int64) error
	RemoveTeamMember(ctx context.Context, teamID, accountID int64) error
	// InviteTeamMember records a pending invitation by email (idempotent).
	InviteTeamMember(ctx context.Context, teamID int64, email, token string) error
	DeleteTeamInvite(ctx context.Context, teamID int64, email string) error
	// ListTeamMembers returns members (with Account filled) then invitations.
	ListTeamMembers(ctx context.Context, teamID int64) ([]TeamMembership, error)
	// TeamsOfAccount returns the teams an account is a member of in orgID.
	TeamsOfAccount(ctx context.Context, orgID, accountID int64) ([]Team, error)
	// CountTeamMembers and CountTeamRepos feed the team views.
	CountTeamMembers(ctx context.Context, teamID int64) (int, error)
	CountTeamRepos(ctx context.Context, teamID int64) (int, error)

	// Robots.

	// CreateRobot creates a robot account (Kind robot, OwnerID the
	// namespace) with its info. ErrConflict if the name is taken.
	CreateRobot(ctx context.Context, robot *Account, info *RobotInfo) error
	GetRobotInfo(ctx context.Context, robotID int64) (*RobotInfo, error)
	// SetRobotToken replaces the encrypted token.
	SetRobotToken(ctx context.Context, robotID int64, tokenEnc []byte) error
	TouchRobot(ctx context.Context, robotID int64, at time.Time) error
	// ListRobots returns the robots owned by a namespace account.
	ListRobots(ctx context.Context, ownerID int64) ([]Account, error)

	// Repository permissions.

	// SetRepoPermission upserts a permission (account or team).
	SetRepoPermission(ctx context.Context, p *RepoPermission) error
	DeleteRepoPermission(ctx context.Context, repoID, accountID, teamID int64) error
	// ListRepoPermissions returns a repository's permissions with Account or Team filled.
	ListRepoPermissions(ctx context.Context, repoID int64) ([]RepoPermission, error)
	// ListAccountPermissions returns the permissions held directly by an
	// account, with Repo filled.
	ListAccountPermissions(ctx context.Context, accountID int64) ([]RepoPermission, error)
	// ListTeamPermissions returns a team's permissions with Repo filled.
	ListTeamPermissions(ctx context.Context, teamID int64) ([]RepoPermission, error)
	// EffectiveRepoRoles returns, in one query, every role the account holds
	// on the repository: directly, and through each team it belongs to
	// (for the permission decision on the hot path).
	EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]Role, error)
	// OrgTeamRoles returns the roles of the teams the account belongs to in orgID.
	OrgTeamRoles(ctx context.Context, orgID, accountID int64) ([]TeamRole, error)
	// OrgMembers reports which of accountIDs belong to a team of orgID, in
	// one query.
	OrgMembers(ctx context.Context, orgID int64, accountIDs []int64) (map[int64]bool, error)
	// UpdateRepository writes Visibility and Description.
	UpdateRepository(ctx context.Context, r *Repository) error
	// ListRepositoriesByNamespace returns a namespace's repositories by name.
	ListRepositoriesByNamespace(ctx context.Context, namespaceID int64) ([]Repository, error)

	// Default permissions.

	CreatePrototype(ctx context.Context, p *Prototype) error
	GetPrototype(ctx context.Context, orgID int64, id string) (*Prototype, error)
	UpdatePrototype(ctx context.Context, p *Prototype) error
	DeletePrototype(ctx context.Context, orgID int64, id string) error
	ListPrototypes(ctx context.Context, orgID int64) ([]Prototype, error)
	// CreateRepositoryWithDefaults creates r and, in the same transaction,
	// grants creatorRole to creatorID (0 for none) and applies the
	// organization's prototypes that match creatorID (and the "anyone" ones).
	CreateRepositoryWithDefaults(ctx context.Context, r *Repository, creatorID int64, creatorRole Role) error

	// Stars.

	SetStar(ctx context.Context, accountID, repoID int64, starred bool) error
	ListStarred(ctx context.Context, accountID int64) ([]Repository, error)
	IsStarred(ctx context.Context, accountID, repoID int64) (bool, error)

	// OAuth applications and access tokens.

	CreateOAuthApplication(ctx context.Context, app *OAuthApplication) error
	// GetOAuthApplication finds an application by client ID within orgID,
	// or in any organization when orgID is 0 (OAuth endpoints know only
	// the client ID).
	GetOAuthApplication(ctx context.Context, orgID int64, clientID string) (*OAuthApplication, error)
	ListOAuthApplications(ctx context.Context, orgID int64) ([]OAuthApplication, error)
	UpdateOAuthApplication(ctx context.Context, app *OAuthApplication) error
	DeleteOAuthApplication(ctx context.Context, id int64) error
	CreateAccessToken(ctx context.Context, t *AccessToken) error
	// GetAccessTokenByHash finds a token by the hex SHA-256 of its value.
	GetAccessTokenByHash(ctx context.Context, hash string) (*AccessToken, error)
	DeleteAccessToken(ctx context.Context, id int64) error
	// ListAccessTokens returns an account's tokens, oldest first.
	ListAccessTokens(ctx context.Context, accountID int64) ([]AccessToken, error)

	// Sessions.

	CreateSession(ctx context.Context, s *Session) error
	GetSession(ctx context.Context, idHash string) (*Session, error)
	DeleteSession(ctx context.Context, idHash string) error
	// DeleteLogins ends every web session and OAuth access token of an
	// account (its password changed, or it was disabled).
	DeleteLogins(ctx context.Context, accountID int64) error

	// Credential epochs (registry token revocation).

	// BumpCredentialEpoch increments subject's credential epoch (from 0)
	// durably and returns the new value.
	BumpCredentialEpoch(ctx context.Context, subject string) (uint64, error)
	// BumpExpiringCredentialEpoch is BumpCredentialEpoch for a subject
	// whose record is needed only until keepUntil (a build attempt's
	// grant, whose tokens have all expired by then); a later bump may push
	// keepUntil back, and a subject kept for ever stays so.
	BumpExpiringCredentialEpoch(ctx context.Context, subject string, keepUntil time.Time) (uint64, error)
	// CredentialEpochsSince lists the epochs changed at or after since;
	// the zero time lists them all.
	CredentialEpochsSince(ctx context.Context, since time.Time) ([]CredentialEpoch, error)
	// DeleteExpiredCredentialEpochs deletes the epochs whose keepUntil is
	// before now and returns how many.
	DeleteExpiredCredentialEpochs(ctx context.Context, now time.Time) (int64, error)
}

// CredentialEpoch is a subject's credential epoch and when it last changed.
type CredentialEpoch struct {
	Subject   string
	Epoch     uint64
	UpdatedAt time.Time
	// KeepUntil is when the record may be forgotten; zero: never.
	KeepUntil time.Time
}
