package localapi

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
)

// Membership routes:
//
//	GET  /v1/members?team=T                       the team's persons, devices and verification status
//	POST /v1/members/remove   {"team","member"}   remove a person (admins)
//	POST /v1/members/promote  {"team","member"}   make a person an admin (admins)
//	POST /v1/devices/link     {"team","ttl"}      a code that links a new device to this device's person
//	POST /v1/devices/remove   {"team","device"}   remove one device (its person or an admin)
//	POST /v1/verify           {"team","member","mark","scanned"}  safety numbers; mark records them as verified

// Member is the JSON form of node.MemberView.
type Member struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Admin   bool     `json:"admin"`
	Self    bool     `json:"self"`
	Devices []Device `json:"devices"`
	Status  string   `json:"verification"`
	Changed []string `json:"changed,omitempty"`
	// Equivocated names (short ids) the member's devices shown to have signed two different
	// messages for one place in their chain: cloned or compromised.
	Equivocated []string `json:"equivocated,omitempty"`
}

// Device is one device of a member.
type Device struct {
	ID    string `json:"id"`
	Short string `json:"short"`
	Label string `json:"label"`
}

// MembershipRequest names a team and a member or device.
type MembershipRequest struct {
	Team    string `json:"team"`
	Member  string `json:"member,omitempty"`
	Device  string `json:"device,omitempty"`
	TTL     string `json:"ttl,omitempty"`
	Mark    bool   `json:"mark,omitempty"`
	Scanned string `json:"scanned,omitempty"`
	// DeviceName names the device a link code links (devices/link); empty: "device N".
	DeviceName string `json:"device_name,omitempty"`
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	ms, err := s.Node.Members(r.URL.Query().Get("team"))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := []Member{}
	for _, m := range ms {
		jm := Member{ID: m.ID.String(), Name: m.Name, Admin: m.Admin, Self: m.Self, Status: string(m.Status)}
		for _, d := range m.Devices {
			jm.Devices = append(jm.Devices, Device{ID: d.ID.String(), Short: d.ID.Short(), Label: d.Label})
		}
		for _, d := range m.Changed {
			jm.Changed = append(jm.Changed, d.Short())
		}
		for _, d := range m.Equivocated {
			jm.Equivocated = append(jm.Equivocated, d.Short())
		}
		out = append(out, jm)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) membership(do func(req MembershipRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req MembershipRequest
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := do(req); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}
}

func (s *Server) linkDevice(w http.ResponseWriter, r *http.Request) {
	var req MembershipRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := durationField("link code lifetime", req.TTL)
	if err != nil {
		writeErr(w, err)
		return
	}
	inv, err := s.Node.LinkDevice(req.Team, ttl, req.DeviceName)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Invite{Code: inv.Code(), Expires: inv.Expires.UTC().Format(time.RFC3339)})
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	var req MembershipRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	var nums []node.Safety
	var err error
	if req.Mark {
		nums, err = s.Node.MarkVerified(req.Team, req.Member, req.Scanned)
	} else {
		nums, err = s.Node.SafetyNumbers(req.Team, req.Member)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nums)
}

// Members lists a team's members.
func (c *Client) Members(ctx context.Context, team string) ([]Member, error) {
	var out []Member
	return out, c.do(ctx, http.MethodGet, "/v1/members?"+url.Values{"team": {team}}.Encode(), nil, &out)
}

// RemoveMember removes a person from a team.
func (c *Client) RemoveMember(ctx context.Context, team, member string) error {
	return c.do(ctx, http.MethodPost, "/v1/members/remove", MembershipRequest{Team: team, Member: member}, nil)
}

// Promote makes a person an admin.
func (c *Client) Promote(ctx context.Context, team, member string) error {
	return c.do(ctx, http.MethodPost, "/v1/members/promote", MembershipRequest{Team: team, Member: member}, nil)
}

// LinkDevice returns a code that links a new device, named deviceName (empty: "device N"), to this
// device's person; ttl 0 is the default.
func (c *Client) LinkDevice(ctx context.Context, team string, ttl time.Duration, deviceName string) (Invite, error) {
	req := MembershipRequest{Team: team, DeviceName: deviceName}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var inv Invite
	return inv, c.do(ctx, http.MethodPost, "/v1/devices/link", req, &inv)
}

// RemoveDevice removes one device from a team.
func (c *Client) RemoveDevice(ctx context.Context, team, device string) error {
	return c.do(ctx, http.MethodPost, "/v1/devices/remove", MembershipRequest{Team: team, Device: device}, nil)
}

// Verify returns the safety numbers with a member's devices; with mark it records them as verified.
func (c *Client) Verify(ctx context.Context, team, member string, mark bool, scanned string) ([]node.Safety, error) {
	var out []node.Safety
	return out, c.do(ctx, http.MethodPost, "/v1/verify", MembershipRequest{Team: team, Member: member, Mark: mark, Scanned: scanned}, &out)
}
