package auth

// RegistryTokenUser is the Basic username under which a client presents,
// as its password, a registry token this server issued. Build workers log
// in this way: the token carries exactly the access the build may use, and
// the registry grants that and nothing more.
const RegistryTokenUser = "$berthbuild"
