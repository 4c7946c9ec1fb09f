package ws

import (
	"time"

	"github.com/coder/websocket"
)

// CloseDisconnected closes the sockets of a user the operator cut off
// (Disconnect): logout everywhere, a ban, a changed password.
const CloseDisconnected = websocket.StatusCode(4003)

// Disconnect closes every socket of userID with CloseDisconnected and
// returns how many there were; for banFor, the user's new sockets are
// refused too (403) until then (tokens already issued stay valid until
// they expire: a ban outlasts them). A banFor of zero lifts a ban. Bans
// are kept in memory: a restarted replica has none.
func (s *Server) Disconnect(userID string, banFor time.Duration) int {
	s.admit.Lock()
	now := s.clock.Now()
	if s.bans == nil {
		s.bans, s.kicks = map[string]time.Time{}, map[string]time.Time{}
	}
	switch {
	case banFor > maxBan:
		banFor = maxBan
	case banFor == 0:
		delete(s.bans, userID) // a ban of zero lifts the ban
	}
	if banFor > 0 {
		s.bans[userID] = now.Add(banFor)
	}
	s.kicks[userID] = now
	// Forget what is over: bans past their end, and disconnects older
	// than any socket still being admitted (an upgrade is bounded by the
	// write timeout).
	for uid, until := range s.bans {
		if !now.Before(until) {
			delete(s.bans, uid)
		}
	}
	for uid, at := range s.kicks {
		if now.Sub(at) > kickMemory {
			delete(s.kicks, uid)
		}
	}
	socks := make([]*socket, 0, len(s.byUser[userID]))
	for sc := range s.byUser[userID] {
		socks = append(socks, sc)
	}
	s.admit.Unlock()
	for _, sc := range socks {
		sc.signal(sigKick)
	}
	return len(socks)
}

// maxBan bounds a ban, however it arrives (the admin route, another
// replica).
const maxBan = 30 * 24 * time.Hour

// kickMemory is how long a disconnect is remembered for the sockets that
// were being admitted when it came.
const kickMemory = time.Minute

// banned reports whether userID's new sockets are refused now; it forgets
// bans that are over. Called with admit held.
func (s *Server) banned(userID string) bool {
	until, ok := s.bans[userID]
	if ok && !s.clock.Now().Before(until) {
		delete(s.bans, userID)
		return false
	}
	return ok
}

// track registers sc as one of its user's sockets; untrack forgets it.
// Both with admit held.
func (s *Server) track(sc *socket) {
	if s.byUser == nil {
		s.byUser = map[string]map[*socket]struct{}{}
	}
	uid := sc.client.UserID()
	if s.byUser[uid] == nil {
		s.byUser[uid] = map[*socket]struct{}{}
	}
	s.byUser[uid][sc] = struct{}{}
}

func (s *Server) untrack(sc *socket) {
	s.admit.Lock()
	defer s.admit.Unlock()
	uid := sc.client.UserID()
	delete(s.byUser[uid], sc)
	if len(s.byUser[uid]) == 0 {
		delete(s.byUser, uid)
	}
}
