package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// CreateRobot creates a robot account (robot.Kind may be left empty) owned
// by robot.OwnerID, with its info, in one transaction.
func (s *Store) CreateRobot(ctx context.Context, robot *store.Account, info *store.RobotInfo) error {
	r := *robot
	if r.Kind == "" {
		r.Kind = store.KindRobot
	}
	if r.Kind != store.KindRobot || r.OwnerID == 0 {
		return fmt.Errorf("sqlstore: create robot %q: kind %q with owner %d", robot.Name, robot.Kind, robot.OwnerID)
	}
	if info == nil {
		info = &store.RobotInfo{}
	}
	var last sql.NullInt64
	if info.LastAccessed != nil {
		last = sql.NullInt64{Int64: nanos(*info.LastAccessed), Valid: true}
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertAccount(ctx, tx, &r); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO robot_info (robot_id, description, unstructured_metadata, token_enc, last_accessed)
			VALUES (?, ?, ?, ?, ?)`), r.ID, info.Description, info.UnstructuredMetadata, info.TokenEnc, last)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create robot %q: %w", robot.Name, err)
	}
	*robot = r
	return nil
}

// GetRobotInfo returns the robot-only data of a robot account.
func (s *Store) GetRobotInfo(ctx context.Context, robotID int64) (*store.RobotInfo, error) {
	var (
		info store.RobotInfo
		last sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, s.q(`SELECT description, unstructured_metadata, token_enc, last_accessed
		FROM robot_info WHERE robot_id = ?`), robotID).Scan(&info.Description, &info.UnstructuredMetadata, &info.TokenEnc, &last)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get robot %d: %w", robotID, notFoundIfNoRows(err))
	}
	if last.Valid {
		t := fromNanos(last.Int64)
		info.LastAccessed = &t
	}
	return &info, nil
}

// SetRobotToken replaces a robot's encrypted token.
func (s *Store) SetRobotToken(ctx context.Context, robotID int64, tokenEnc []byte) error {
	if err := s.execOne(ctx, `UPDATE robot_info SET token_enc = ? WHERE robot_id = ?`, tokenEnc, robotID); err != nil {
		return fmt.Errorf("sqlstore: set robot %d token: %w", robotID, err)
	}
	return nil
}

// TouchRobot records when a robot last authenticated.
func (s *Store) TouchRobot(ctx context.Context, robotID int64, at time.Time) error {
	if err := s.execOne(ctx, `UPDATE robot_info SET last_accessed = ? WHERE robot_id = ?`, nanos(at), robotID); err != nil {
		return fmt.Errorf("sqlstore: touch robot %d: %w", robotID, err)
	}
	return nil
}

// ListRobots returns the robots owned by a namespace account, by name.
func (s *Store) ListRobots(ctx context.Context, ownerID int64) ([]store.Account, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT `+accountColumns+` FROM accounts WHERE owner_id = ? AND kind = 'robot' ORDER BY name`),
		[]any{ownerID}, s.scanAccountValue)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list robots of %d: %w", ownerID, err)
	}
	return out, nil
}

// grantee is the account or the team a permission or prototype names.
type grantee struct{ account, team int64 }

func checkGrantee(accountID, teamID int64) error {
	if (accountID == 0) == (teamID == 0) {
		return fmt.Errorf("exactly one of account (%d) and team (%d) must be set", accountID, teamID)
	}
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// upsertPermission grants role on repoID to g, replacing a role g held.
func (s *Store) upsertPermission(ctx context.Context, db execer, repoID int64, g grantee, role store.Role) error {
	query := `INSERT INTO repo_permissions (repo_id, account_id, role) VALUES (?, ?, ?)
		ON CONFLICT (repo_id, account_id) DO UPDATE SET role = excluded.role`
	id := g.account
	if g.team != 0 {
		query = `INSERT INTO repo_permissions (repo_id, team_id, role) VALUES (?, ?, ?)
			ON CONFLICT (repo_id, team_id) DO UPDATE SET role = excluded.role`
		id = g.team
	}
	_, err := db.ExecContext(ctx, s.q(query), repoID, id, string(role))
	return classify(err)
}

// SetRepoPermission grants p.Role on p.RepoID to p.AccountID or p.TeamID,
// replacing the role held before. ErrNotFound if the repository, account
// or team does not exist.
func (s *Store) SetRepoPermission(ctx context.Context, p *store.RepoPermission) error {
	if err := checkGrantee(p.AccountID, p.TeamID); err != nil {
		return fmt.Errorf("sqlstore: set permission on repository %d: %w", p.RepoID, err)
	}
	if p.Role.Rank() == 0 {
		return fmt.Errorf("sqlstore: set permission on repository %d: invalid role %q", p.RepoID, p.Role)
	}
	if err := s.upsertPermission(ctx, s.w, p.RepoID, grantee{p.AccountID, p.TeamID}, p.Role); err != nil {
		return fmt.Errorf("sqlstore: set permission on repository %d: %w", p.RepoID, err)
	}
	return nil
}

// DeleteRepoPermission removes the permission of an account or (accountID
// 0) a team. ErrNotFound if there was none.
func (s *Store) DeleteRepoPermission(ctx context.Context, repoID, accountID, teamID int64) error {
	if err := checkGrantee(accountID, teamID); err != nil {
		return fmt.Errorf("sqlstore: delete permission on repository %d: %w", repoID, err)
	}
	query, id := `DELETE FROM repo_permissions WHERE repo_id = ? AND account_id = ?`, accountID
	if teamID != 0 {
		query, id = `DELETE FROM repo_permissions WHERE repo_id = ? AND team_id = ?`, teamID
	}
	if err := s.execOne(ctx, query, repoID, id); err != nil {
		return fmt.Errorf("sqlstore: delete permission on repository %d: %w", repoID, err)
	}
	return nil
}

// ListRepoPermissions returns a repository's account permissions by account
// name, then its team permissions by team name.
func (s *Store) ListRepoPermissions(ctx context.Context, repoID int64) ([]store.RepoPermission, error) {
	var out []store.RepoPermission
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		accounts, err := queryAll(ctx, tx, s.q(`SELECT `+accountColumnsA+`, p.role FROM repo_permissions p
			JOIN accounts a ON a.id = p.account_id WHERE p.repo_id = ? ORDER BY a.name`), []any{repoID},
			func(sc rowScanner) (store.RepoPermission, error) {
				var role string
				a, err := s.scanAccount(scanWith{sc, []any{&role}})
				if err != nil {
					return store.RepoPermission{}, err
				}
				return store.RepoPermission{RepoID: repoID, AccountID: a.ID, Role: store.Role(role), Account: a}, nil
			})
		if err != nil {
			return err
		}
		teams, err := queryAll(ctx, tx, s.q(`SELECT `+teamColumns+`, p.role FROM repo_permissions p
			JOIN teams t ON t.id = p.team_id WHERE p.repo_id = ? ORDER BY t.name`), []any{repoID},
			func(sc rowScanner) (store.RepoPermission, error) {
				var role string
				t, err := scanTeam(scanWith{sc, []any{&role}})
				return store.RepoPermission{RepoID: repoID, TeamID: t.ID, Role: store.Role(role), Team: &t}, err
			})
		out = append(accounts, teams...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list permissions on repository %d: %w", repoID, err)
	}
	return out, nil
}

// listPermissionsBy returns the permissions whose column (account_id or
// team_id) is id, with Repo filled, by repository full name.
func (s *Store) listPermissionsBy(ctx context.Context, column string, id int64) ([]store.RepoPermission, error) {
	return queryAll(ctx, s.r, s.q(`SELECT r.id, r.namespace_id, a.name, r.name, r.visibility, r.description, r.created_at, p.role
		FROM repo_permissions p JOIN repositories r ON r.id = p.repo_id JOIN accounts a ON a.id = r.namespace_id
		WHERE p.`+column+` = ? ORDER BY a.name, r.name`), []any{id},
		func(sc rowScanner) (store.RepoPermission, error) {
			var role string
			r, err := scanRepository(scanWith{sc, []any{&role}})
			p := store.RepoPermission{RepoID: r.ID, Role: store.Role(role), Repo: &r}
			if column == "account_id" {
				p.AccountID = id
			} else {
				p.TeamID = id
			}
			return p, err
		})
}

// ListAccountPermissions returns the permissions an account holds directly.
func (s *Store) ListAccountPermissions(ctx context.Context, accountID int64) ([]store.RepoPermission, error) {
	out, err := s.listPermissionsBy(ctx, "account_id", accountID)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list permissions of account %d: %w", accountID, err)
	}
	return out, nil
}

// ListTeamPermissions returns a team's permissions.
func (s *Store) ListTeamPermissions(ctx context.Context, teamID int64) ([]store.RepoPermission, error) {
	out, err := s.listPermissionsBy(ctx, "team_id", teamID)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list permissions of team %d: %w", teamID, err)
	}
	return out, nil
}

// effectiveRolesSQL reads the direct grant through the (repo_id, account_id)
// unique index and the team grants through team_members_account and the
// (repo_id, team_id) unique index: a few index probes on either database.
const effectiveRolesSQL = `SELECT role FROM repo_permissions WHERE repo_id = ? AND account_id = ?
	UNION ALL
	SELECT p.role FROM team_members m JOIN repo_permissions p ON p.team_id = m.team_id
	WHERE m.account_id = ? AND p.repo_id = ?`

// EffectiveRepoRoles returns the roles accountID holds on repoID, directly
// and through its teams, in one query. Roles may repeat.
func (s *Store) EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]store.Role, error) {
	out, err := queryAll(ctx, s.r, s.q(effectiveRolesSQL), []any{repoID, accountID, accountID, repoID},
		func(sc rowScanner) (store.Role, error) {
			var r string
			err := sc.Scan(&r)
			return store.Role(r), err
		})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: roles of account %d on repository %d: %w", accountID, repoID, err)
	}
	return out, nil
}

// UpdateRepository writes Visibility and Description.
func (s *Store) UpdateRepository(ctx context.Context, r *store.Repository) error {
	if r.Visibility != store.Public && r.Visibility != store.Private {
		return fmt.Errorf("sqlstore: update repository %d: invalid visibility %q", r.ID, r.Visibility)
	}
	err := s.execOne(ctx, `UPDATE repositories SET visibility = ?, description = ? WHERE id = ?`,
		string(r.Visibility), r.Description, r.ID)
	if err != nil {
		return fmt.Errorf("sqlstore: update repository %d: %w", r.ID, err)
	}
	return nil
}

// ListRepositoriesByNamespace returns a namespace's repositories by name.
func (s *Store) ListRepositoriesByNamespace(ctx context.Context, namespaceID int64) ([]store.Repository, error) {
	out, err := queryAll(ctx, s.r, s.q(repositorySelect+`WHERE r.namespace_id = ? ORDER BY r.name`), []any{namespaceID}, scanRepository)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list repositories of %d: %w", namespaceID, err)
	}
	return out, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func checkPrototype(p *store.Prototype) error {
	if err := checkGrantee(p.DelegateAccountID, p.DelegateTeamID); err != nil {
		return err
	}
	if p.Role.Rank() == 0 {
		return fmt.Errorf("invalid role %q", p.Role)
	}
	return nil
}

// CreatePrototype stores a default permission, choosing p.ID when empty.
// ErrNotFound if an account or team it names does not exist.
func (s *Store) CreatePrototype(ctx context.Context, p *store.Prototype) error {
	if err := checkPrototype(p); err != nil {
		return fmt.Errorf("sqlstore: create prototype: %w", err)
	}
	id := p.ID
	if id == "" {
		id = newUUID()
	}
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO prototypes
		(id, org_id, activating_user_id, delegate_account_id, delegate_team_id, role, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), id, p.OrgID, nullInt(p.ActivatingUserID), nullInt(p.DelegateAccountID),
		nullInt(p.DelegateTeamID), string(p.Role), nanos(now()))
	if err != nil {
		return fmt.Errorf("sqlstore: create prototype: %w", classify(err))
	}
	p.ID = id
	return nil
}

const prototypeColumns = `id, org_id, activating_user_id, delegate_account_id, delegate_team_id, role`

func scanPrototype(sc rowScanner) (store.Prototype, error) {
	var (
		p                   store.Prototype
		act, delegate, team sql.NullInt64
		role                string
	)
	err := sc.Scan(&p.ID, &p.OrgID, &act, &delegate, &team, &role)
	p.ActivatingUserID, p.DelegateAccountID, p.DelegateTeamID, p.Role = act.Int64, delegate.Int64, team.Int64, store.Role(role)
	return p, err
}

// GetPrototype finds one of an organization's default permissions.
func (s *Store) GetPrototype(ctx context.Context, orgID int64, id string) (*store.Prototype, error) {
	p, err := scanPrototype(s.r.QueryRowContext(ctx, s.q(`SELECT `+prototypeColumns+` FROM prototypes WHERE org_id = ? AND id = ?`), orgID, id))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get prototype %s: %w", id, notFoundIfNoRows(err))
	}
	return &p, nil
}

// UpdatePrototype writes the activating user, the delegate and the role of
// the prototype p.ID of p.OrgID.
func (s *Store) UpdatePrototype(ctx context.Context, p *store.Prototype) error {
	if err := checkPrototype(p); err != nil {
		return fmt.Errorf("sqlstore: update prototype %s: %w", p.ID, err)
	}
	err := s.execOne(ctx, `UPDATE prototypes SET activating_user_id = ?, delegate_account_id = ?, delegate_team_id = ?, role = ?
		WHERE org_id = ? AND id = ?`, nullInt(p.ActivatingUserID), nullInt(p.DelegateAccountID), nullInt(p.DelegateTeamID),
		string(p.Role), p.OrgID, p.ID)
	if err != nil {
		return fmt.Errorf("sqlstore: update prototype %s: %w", p.ID, err)
	}
	return nil
}

// DeletePrototype removes one of an organization's default permissions.
func (s *Store) DeletePrototype(ctx context.Context, orgID int64, id string) error {
	if err := s.execOne(ctx, `DELETE FROM prototypes WHERE org_id = ? AND id = ?`, orgID, id); err != nil {
		return fmt.Errorf("sqlstore: delete prototype %s: %w", id, err)
	}
	return nil
}

// ListPrototypes returns an organization's default permissions, oldest first.
func (s *Store) ListPrototypes(ctx context.Context, orgID int64) ([]store.Prototype, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT `+prototypeColumns+` FROM prototypes WHERE org_id = ? ORDER BY created_at, id`),
		[]any{orgID}, scanPrototype)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list prototypes of %d: %w", orgID, err)
	}
	return out, nil
}

// CreateRepositoryWithDefaults creates r (Visibility private when empty)
// and, in the same transaction, grants creatorRole to creatorID (when both
// are set) and, in an organization, applies the prototypes activated by
// anyone or by creatorID. A grantee named more than once gets the
// strongest of its roles.
func (s *Store) CreateRepositoryWithDefaults(ctx context.Context, r *store.Repository, creatorID int64, creatorRole store.Role) error {
	nr := *r
	if nr.Visibility == "" {
		nr.Visibility = store.Private
	}
	if nr.Visibility != store.Public && nr.Visibility != store.Private {
		return fmt.Errorf("sqlstore: create repository %q: invalid visibility %q", r.Name, r.Visibility)
	}
	if creatorRole != "" && creatorRole.Rank() == 0 {
		return fmt.Errorf("sqlstore: create repository %q: invalid creator role %q", r.Name, creatorRole)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		kind, err := s.insertRepository(ctx, tx, &nr)
		if err != nil {
			return classify(err)
		}
		grants := map[grantee]store.Role{}
		grant := func(g grantee, role store.Role) {
			if role.Rank() > grants[g].Rank() {
				grants[g] = role
			}
		}
		if creatorID != 0 && creatorRole != "" {
			grant(grantee{account: creatorID}, creatorRole)
		}
		if kind == store.KindOrganization {
			// Read every match before writing: a PostgreSQL connection
			// cannot run a statement while a result set is open.
			protos, err := queryAll(ctx, tx, s.q(`SELECT `+prototypeColumns+` FROM prototypes
				WHERE org_id = ? AND (activating_user_id IS NULL OR activating_user_id = ?)`),
				[]any{nr.NamespaceID, creatorID}, scanPrototype)
			if err != nil {
				return err
			}
			for _, p := range protos {
				grant(grantee{p.DelegateAccountID, p.DelegateTeamID}, p.Role)
			}
		}
		for g, role := range grants {
			if err := s.upsertPermission(ctx, tx, nr.ID, g, role); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create repository %q: %w", r.Name, err)
	}
	*r = nr
	return nil
}

// SetStar stars or unstars a repository for an account; either is idempotent.
func (s *Store) SetStar(ctx context.Context, accountID, repoID int64, starred bool) error {
	var err error
	if starred {
		_, err = s.w.ExecContext(ctx, s.q(`INSERT INTO stars (account_id, repo_id, created_at) VALUES (?, ?, ?)
			ON CONFLICT (account_id, repo_id) DO NOTHING`), accountID, repoID, nanos(now()))
	} else {
		_, err = s.w.ExecContext(ctx, s.q(`DELETE FROM stars WHERE account_id = ? AND repo_id = ?`), accountID, repoID)
	}
	if err != nil {
		return fmt.Errorf("sqlstore: star repository %d for %d: %w", repoID, accountID, classify(err))
	}
	return nil
}

// ListStarred returns the repositories an account starred, by full name.
func (s *Store) ListStarred(ctx context.Context, accountID int64) ([]store.Repository, error) {
	out, err := queryAll(ctx, s.r, s.q(repositorySelect+`JOIN stars st ON st.repo_id = r.id
		WHERE st.account_id = ? ORDER BY a.name, r.name`), []any{accountID}, scanRepository)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list starred of %d: %w", accountID, err)
	}
	return out, nil
}

// IsStarred reports whether an account starred a repository.
func (s *Store) IsStarred(ctx context.Context, accountID, repoID int64) (bool, error) {
	var n int
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM stars WHERE account_id = ? AND repo_id = ?`), accountID, repoID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("sqlstore: is repository %d starred by %d: %w", repoID, accountID, err)
	}
	return n > 0, nil
}
