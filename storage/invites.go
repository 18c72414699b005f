package storage

// Invite returns an open invite without consuming it (ErrNotFound if it was used or never existed).
// The inviter reads it to learn the pre-shared key of the join handshake, and consumes it with
// UseInvite only once the handshake proved the joiner holds the code.
func (s *Store) Invite(id [16]byte) ([]byte, error) {
	return s.get(idKey(prefixInvite, id[:]))
}
