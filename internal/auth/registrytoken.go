package auth

import "strconv"

// RegistryTokenUser is the Basic username under which a client presents,
// as its password, a registry token this server issued. Build workers log
// in this way: the token carries exactly the access the build may use, and
// the registry grants that and nothing more.
const RegistryTokenUser = "$berthbuild"

// BuildGrant is the revocation subject of one attempt of a build: its
// workers' registry tokens are issued under it (TokenService.IssueGrant),
// and revoking it when the attempt ends refuses them on every server of
// the database. No account name contains a colon, so it names no account.
func BuildGrant(buildID string, attempt int) string {
	return "build:" + buildID + ":" + strconv.Itoa(attempt)
}
