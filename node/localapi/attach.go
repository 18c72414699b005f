package localapi

// Attachments. Routes (Server.registerAttachments):
//
//	POST /v1/attachments/send  SendRequest with "attachments": [{"type","data"}]   data is base64;
//	                           images are re-encoded by the node (node.SendAttached); answers Sent
//	GET  /v1/attachments?team=T                 the attachments of a team's messages: [AttachmentInfo]
//	POST /v1/attachments/open  {"ref": "MSG[/N]"}  one attachment's bytes: {"type","data"}; 404 with
//	                           "not all on this device yet" while chunks are missing (they are then
//	                           asked for)

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/unixapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// AttachmentFile is a file attached to a message: its media type and bytes (base64 in JSON).
type AttachmentFile struct {
	Type string `json:"type"`
	Data []byte `json:"data"`
}

// AttachmentInfo is the JSON form of node.AttachmentInfo. Ref names it for /v1/attachments/open.
type AttachmentInfo struct {
	Ref     string `json:"ref"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Size    int    `json:"size"`
	Chunks  int    `json:"chunks"`
	Stored  int    `json:"stored"`
	// Evicted: its chunks were evicted to keep within the device's storage budget; opening it asks
	// the connected peers and relays for them again.
	Evicted bool `json:"evicted"`
}

// AttachmentStorage is the JSON form of node.AttachmentStorage: bytes and chunks stored, the budget
// in bytes (0: none), and how many attachments were evicted.
type AttachmentStorage struct {
	Bytes   int64 `json:"bytes"`
	Chunks  int   `json:"chunks"`
	Budget  int64 `json:"budget"`
	Evicted int   `json:"evicted"`
}

// maxAttachedRequest bounds a send request with attachments: MaxAttachments files of at most
// node.MaxAttachmentFile, base64-encoded, and the rest of a request.
const maxAttachedRequest = crdt.MaxAttachments*node.MaxAttachmentFile*4/3 + maxRequest

func (s *Server) registerAttachments(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/attachments/send", s.sendAttached)
	mux.HandleFunc("GET /v1/attachments", s.attachments)
	mux.HandleFunc("POST /v1/attachments/open", s.openAttachment)
}

func (s *Server) sendAttached(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	if err := unixapi.Decode(w, r, maxAttachedRequest, &req); err != nil {
		writeErr(w, errors.New("localapi: bad request: "+err.Error()))
		return
	}
	m, err := s.messageOf(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	files := make([]node.Attachment, len(req.Attachments))
	for i, f := range req.Attachments {
		files[i] = node.Attachment{Type: f.Type, Data: f.Data}
	}
	id, hlc, err := s.Node.SendAttached(req.Team, m, files)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Sent{ID: id.String(), HLC: uint64(hlc)})
}

func (s *Server) attachments(w http.ResponseWriter, r *http.Request) {
	as, err := s.Node.Attachments(r.URL.Query().Get("team"))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := make([]AttachmentInfo, len(as))
	for i, a := range as {
		out[i] = AttachmentInfo{Ref: a.Message.Short() + "/" + strconv.Itoa(a.Index+1), Message: a.Message.String(),
			Type: a.Type, Size: a.Size, Chunks: a.Chunks, Stored: a.Stored, Evicted: a.Evicted}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) openAttachment(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ref string `json:"ref"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	msg, i, err := node.ParseAttachmentRef(req.Ref)
	if err != nil {
		writeErr(w, err)
		return
	}
	typ, data, err := s.Node.OpenAttachment(msg, i)
	if errors.Is(err, node.ErrAttachmentMissing) {
		writeJSON(w, http.StatusNotFound, apiError{Error: strings.TrimPrefix(err.Error(), "node: ")})
		return
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AttachmentFile{Type: typ, Data: data})
}

// Attachments lists the attachments of a team's messages.
func (c *Client) Attachments(ctx context.Context, team string) ([]AttachmentInfo, error) {
	var as []AttachmentInfo
	return as, c.do(ctx, http.MethodGet, "/v1/attachments?team="+url.QueryEscape(team), nil, &as)
}

// OpenAttachment returns one attachment's media type and bytes; ref is MSG or MSG/N.
func (c *Client) OpenAttachment(ctx context.Context, ref string) (AttachmentFile, error) {
	var f AttachmentFile
	return f, c.do(ctx, http.MethodPost, "/v1/attachments/open", map[string]string{"ref": ref}, &f)
}
