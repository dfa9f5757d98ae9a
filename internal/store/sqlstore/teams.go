package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/store"
)

// defaultTagExpirationS is Quay's default time-machine window, two weeks;
// an organization without a settings row has it.
const defaultTagExpirationS = 14 * 24 * 3600

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner = interface{ Scan(dest ...any) error }

// scanWith appends extra destinations to every Scan, so that a scan
// function written for a table's columns also reads columns joined after them.
type scanWith struct {
	sc    rowScanner
	extra []any
}

func (w scanWith) Scan(dest ...any) error { return w.sc.Scan(append(dest, w.extra...)...) }

// querier is a pool or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryAll runs a read query and scans every row with scan.
func queryAll[T any](ctx context.Context, db querier, query string, args []any, scan func(rowScanner) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// nullInt stores the ID 0 as NULL.
func nullInt(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

// accountColumnsA are accountColumns for a query that names accounts "a".
const accountColumnsA = `a.id, a.kind, a.name, a.email, a.password_hash, a.superuser, a.enabled, a.owner_id, a.created_at`

func (s *Store) scanAccountValue(sc rowScanner) (store.Account, error) {
	a, err := s.scanAccount(sc)
	if err != nil {
		return store.Account{}, err
	}
	return *a, nil
}

// ListAccounts returns the accounts of one kind ("" for every kind) by name.
func (s *Store) ListAccounts(ctx context.Context, kind store.AccountKind) ([]store.Account, error) {
	query, args := `SELECT `+accountColumns+` FROM accounts ORDER BY name`, []any(nil)
	if kind != "" {
		query, args = `SELECT `+accountColumns+` FROM accounts WHERE kind = ? ORDER BY name`, []any{string(kind)}
	}
	out, err := queryAll(ctx, s.r, s.q(query), args, s.scanAccountValue)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list %s accounts: %w", kind, err)
	}
	return out, nil
}

// UpdateAccount writes Email, PasswordHash, Superuser and Enabled.
func (s *Store) UpdateAccount(ctx context.Context, a *store.Account) error {
	err := s.execOne(ctx, `UPDATE accounts SET email = ?, password_hash = ?, superuser = ?, enabled = ? WHERE id = ?`,
		a.Email, a.PasswordHash, a.Superuser, a.Enabled, a.ID)
	if err != nil {
		return fmt.Errorf("sqlstore: update account %d: %w", a.ID, err)
	}
	return nil
}

// DeleteAccount removes an account; the foreign keys cascade to what it owns.
func (s *Store) DeleteAccount(ctx context.Context, id int64) error {
	if err := s.execOne(ctx, `DELETE FROM accounts WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete account %d: %w", id, err)
	}
	return nil
}

// GetOrgSettings returns an organization's settings, the defaults when none
// were stored. ErrNotFound if orgID is not an organization.
func (s *Store) GetOrgSettings(ctx context.Context, orgID int64) (*store.OrgSettings, error) {
	var o store.OrgSettings
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COALESCE(o.invoice_email, FALSE), COALESCE(o.invoice_email_address, ''),
			COALESCE(o.tag_expiration_s, ?)
		FROM accounts a LEFT JOIN org_settings o ON o.org_id = a.id
		WHERE a.id = ? AND a.kind = 'organization'`), int64(defaultTagExpirationS), orgID,
	).Scan(&o.InvoiceEmail, &o.InvoiceEmailAddress, &o.TagExpirationS)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get organization %d settings: %w", orgID, notFoundIfNoRows(err))
	}
	return &o, nil
}

// PutOrgSettings stores an organization's settings. ErrNotFound if orgID is
// not an organization.
func (s *Store) PutOrgSettings(ctx context.Context, orgID int64, o *store.OrgSettings) error {
	if o.TagExpirationS < 0 {
		return fmt.Errorf("sqlstore: put organization %d settings: negative tag expiration", orgID)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.requireOrg(ctx, tx, orgID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO org_settings (org_id, invoice_email, invoice_email_address, tag_expiration_s)
			VALUES (?, ?, ?, ?)
			ON CONFLICT (org_id) DO UPDATE SET invoice_email = excluded.invoice_email,
				invoice_email_address = excluded.invoice_email_address, tag_expiration_s = excluded.tag_expiration_s`),
			orgID, o.InvoiceEmail, o.InvoiceEmailAddress, o.TagExpirationS)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: put organization %d settings: %w", orgID, err)
	}
	return nil
}

// requireOrg returns ErrNotFound unless id is an organization.
func (s *Store) requireOrg(ctx context.Context, tx *sql.Tx, id int64) error {
	var kind string
	err := tx.QueryRowContext(ctx, s.q(`SELECT kind FROM accounts WHERE id = ?`), id).Scan(&kind)
	if err != nil {
		return fmt.Errorf("organization %d: %w", id, notFoundIfNoRows(err))
	}
	if kind != string(store.KindOrganization) {
		return fmt.Errorf("account %d is a %s, not an organization: %w", id, kind, store.ErrNotFound)
	}
	return nil
}

// CreateOrganization creates the organization (org.Kind may be left empty),
// its owners team and, unless creatorID is 0, puts the creator in it.
func (s *Store) CreateOrganization(ctx context.Context, org *store.Account, creatorID int64) error {
	o := *org
	if o.Kind == "" {
		o.Kind = store.KindOrganization
	}
	if o.Kind != store.KindOrganization {
		return fmt.Errorf("sqlstore: create organization %q: kind is %q", org.Name, org.Kind)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertAccount(ctx, tx, &o); err != nil {
			return err
		}
		var teamID int64
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO teams (org_id, name, description, role, created_at)
			VALUES (?, ?, '', ?, ?) RETURNING id`), o.ID, store.OwnersTeam, string(store.TeamAdmin), nanos(o.CreatedAt)).Scan(&teamID)
		if err != nil {
			return classify(err)
		}
		if creatorID == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO team_members (team_id, account_id, created_at) VALUES (?, ?, ?)`),
			teamID, creatorID, nanos(o.CreatedAt))
		return classify(err)
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create organization %q: %w", org.Name, err)
	}
	*org = o
	return nil
}

const teamColumns = `t.id, t.org_id, t.name, t.description, t.role, t.created_at`

func scanTeam(sc rowScanner) (store.Team, error) {
	var (
		t       store.Team
		role    string
		created int64
	)
	err := sc.Scan(&t.ID, &t.OrgID, &t.Name, &t.Description, &role, &created)
	t.Role, t.CreatedAt = store.TeamRole(role), fromNanos(created)
	return t, err
}

func validTeamRole(r store.TeamRole) bool {
	return r == store.TeamMember || r == store.TeamCreator || r == store.TeamAdmin
}

// PutTeam creates or updates (Description and Role) the team named t.Name
// in t.OrgID, filling ID and CreatedAt. An empty Role is member.
// ErrNotFound if t.OrgID is not an organization.
func (s *Store) PutTeam(ctx context.Context, t *store.Team) (bool, error) {
	nt := *t
	if nt.Role == "" {
		nt.Role = store.TeamMember
	}
	if !validTeamRole(nt.Role) {
		return false, fmt.Errorf("sqlstore: put team %q: invalid role %q", t.Name, t.Role)
	}
	created := false
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.requireOrg(ctx, tx, nt.OrgID); err != nil {
			return err
		}
		var at int64
		err := tx.QueryRowContext(ctx, s.q(`SELECT id, created_at FROM teams WHERE org_id = ? AND name = ?`), nt.OrgID, nt.Name).Scan(&nt.ID, &at)
		if err == nil {
			nt.CreatedAt = fromNanos(at)
			_, err = tx.ExecContext(ctx, s.q(`UPDATE teams SET description = ?, role = ? WHERE id = ?`), nt.Description, string(nt.Role), nt.ID)
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		nt.CreatedAt, created = now(), true
		return classify(tx.QueryRowContext(ctx, s.q(`INSERT INTO teams (org_id, name, description, role, created_at)
			VALUES (?, ?, ?, ?, ?) RETURNING id`), nt.OrgID, nt.Name, nt.Description, string(nt.Role), nanos(nt.CreatedAt)).Scan(&nt.ID))
	})
	if err != nil {
		return false, fmt.Errorf("sqlstore: put team %q: %w", t.Name, err)
	}
	*t = nt
	return created, nil
}

// GetTeam finds a team by organization and name.
func (s *Store) GetTeam(ctx context.Context, orgID int64, name string) (*store.Team, error) {
	t, err := scanTeam(s.r.QueryRowContext(ctx, s.q(`SELECT `+teamColumns+` FROM teams t WHERE t.org_id = ? AND t.name = ?`), orgID, name))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get team %q: %w", name, notFoundIfNoRows(err))
	}
	return &t, nil
}

// ListTeams returns an organization's teams by name.
func (s *Store) ListTeams(ctx context.Context, orgID int64) ([]store.Team, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT `+teamColumns+` FROM teams t WHERE t.org_id = ? ORDER BY t.name`), []any{orgID}, scanTeam)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list teams of %d: %w", orgID, err)
	}
	return out, nil
}

// DeleteTeam removes a team with its members, invitations, permissions and
// the prototypes delegating to it.
func (s *Store) DeleteTeam(ctx context.Context, id int64) error {
	if err := s.execOne(ctx, `DELETE FROM teams WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete team %d: %w", id, err)
	}
	return nil
}

// AddTeamMember adds an account to a team; adding a member again is a no-op.
// ErrNotFound if the team or the account does not exist.
func (s *Store) AddTeamMember(ctx context.Context, teamID, accountID int64) error {
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO team_members (team_id, account_id, created_at) VALUES (?, ?, ?)
		ON CONFLICT (team_id, account_id) DO NOTHING`), teamID, accountID, nanos(now()))
	if err != nil {
		return fmt.Errorf("sqlstore: add account %d to team %d: %w", accountID, teamID, classify(err))
	}
	return nil
}

// RemoveTeamMember removes an account from a team. ErrNotFound if it was
// not a member.
func (s *Store) RemoveTeamMember(ctx context.Context, teamID, accountID int64) error {
	if err := s.execOne(ctx, `DELETE FROM team_members WHERE team_id = ? AND account_id = ?`, teamID, accountID); err != nil {
		return fmt.Errorf("sqlstore: remove account %d from team %d: %w", accountID, teamID, err)
	}
	return nil
}

// InviteTeamMember records an invitation. Inviting the same email again
// replaces the token, so that the link sent last is the one that works.
// ErrConflict if the token is already used by another invitation.
func (s *Store) InviteTeamMember(ctx context.Context, teamID int64, email, token string) error {
	if email == "" || token == "" {
		return fmt.Errorf("sqlstore: invite to team %d: empty email or token", teamID)
	}
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO team_invites (team_id, email, token, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (team_id, email) DO UPDATE SET token = excluded.token, created_at = excluded.created_at`),
		teamID, email, token, nanos(now()))
	if err != nil {
		return fmt.Errorf("sqlstore: invite %q to team %d: %w", email, teamID, classify(err))
	}
	return nil
}

// DeleteTeamInvite removes an invitation. ErrNotFound if there was none.
func (s *Store) DeleteTeamInvite(ctx context.Context, teamID int64, email string) error {
	if err := s.execOne(ctx, `DELETE FROM team_invites WHERE team_id = ? AND email = ?`, teamID, email); err != nil {
		return fmt.Errorf("sqlstore: delete invitation of %q to team %d: %w", email, teamID, err)
	}
	return nil
}

// ListTeamMembers returns the members by name, then the invitations by email.
func (s *Store) ListTeamMembers(ctx context.Context, teamID int64) ([]store.TeamMembership, error) {
	var out []store.TeamMembership
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		members, err := queryAll(ctx, tx, s.q(`SELECT `+accountColumnsA+` FROM team_members m
			JOIN accounts a ON a.id = m.account_id WHERE m.team_id = ? ORDER BY a.name`), []any{teamID},
			func(sc rowScanner) (store.TeamMembership, error) {
				a, err := s.scanAccount(sc)
				if err != nil {
					return store.TeamMembership{}, err
				}
				return store.TeamMembership{TeamID: teamID, Account: a, Email: a.Email}, nil
			})
		if err != nil {
			return err
		}
		invites, err := queryAll(ctx, tx, s.q(`SELECT email, token FROM team_invites WHERE team_id = ? ORDER BY email`), []any{teamID},
			func(sc rowScanner) (store.TeamMembership, error) {
				m := store.TeamMembership{TeamID: teamID, Invited: true}
				err := sc.Scan(&m.Email, &m.InviteToken)
				return m, err
			})
		out = append(members, invites...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list members of team %d: %w", teamID, err)
	}
	return out, nil
}

// TeamsOfAccount returns, by name, the teams of orgID that accountID is in.
func (s *Store) TeamsOfAccount(ctx context.Context, orgID, accountID int64) ([]store.Team, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT `+teamColumns+` FROM team_members m JOIN teams t ON t.id = m.team_id
		WHERE m.account_id = ? AND t.org_id = ? ORDER BY t.name`), []any{accountID, orgID}, scanTeam)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: teams of account %d in %d: %w", accountID, orgID, err)
	}
	return out, nil
}

// CountTeamMembers counts a team's members, not its invitations.
func (s *Store) CountTeamMembers(ctx context.Context, teamID int64) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM team_members WHERE team_id = ?`), teamID).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlstore: count members of team %d: %w", teamID, err)
	}
	return n, nil
}

// CountTeamRepos counts the repositories a team has a permission on.
func (s *Store) CountTeamRepos(ctx context.Context, teamID int64) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM repo_permissions WHERE team_id = ?`), teamID).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlstore: count repositories of team %d: %w", teamID, err)
	}
	return n, nil
}

const orgTeamRolesSQL = `SELECT t.role FROM team_members m JOIN teams t ON t.id = m.team_id
	WHERE m.account_id = ? AND t.org_id = ?`

// OrgTeamRoles returns the roles of the teams of orgID that accountID is in,
// in one indexed query (team_members_account, then the teams primary key).
func (s *Store) OrgTeamRoles(ctx context.Context, orgID, accountID int64) ([]store.TeamRole, error) {
	out, err := queryAll(ctx, s.r, s.q(orgTeamRolesSQL), []any{accountID, orgID}, func(sc rowScanner) (store.TeamRole, error) {
		var r string
		err := sc.Scan(&r)
		return store.TeamRole(r), err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: team roles of account %d in %d: %w", accountID, orgID, err)
	}
	return out, nil
}

// OrgMembers reports which of accountIDs are in a team of orgID, in one
// query (team_members_account per account, then the teams primary key).
func (s *Store) OrgMembers(ctx context.Context, orgID int64, accountIDs []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	if len(accountIDs) == 0 {
		return out, nil
	}
	args := []any{orgID}
	for _, id := range accountIDs {
		args = append(args, id)
	}
	ids, err := queryAll(ctx, s.r, s.q(`SELECT DISTINCT m.account_id FROM team_members m JOIN teams t ON t.id = m.team_id
		WHERE t.org_id = ? AND m.account_id IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(accountIDs)), ", ")+`)`),
		args, func(sc rowScanner) (int64, error) {
			var id int64
			err := sc.Scan(&id)
			return id, err
		})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: members of org %d: %w", orgID, err)
	}
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}
