// Package webui is the node's local web UI: a single page (plain HTML, CSS and JavaScript embedded
// with embed, no build step) served on 127.0.0.1 by the daemon, driving the node through the same
// handlers as the command line (node/localapi, mounted under /api/v1/) plus three routes of its own:
// a paged message list, a server-sent event stream, and QR codes.
//
// Safety, in the order a request meets it (Server.Handler):
//
//   - Host check: the Host header must be 127.0.0.1:PORT or localhost:PORT, the port being the
//     listener's, so a DNS-rebinding page (evil.example resolving to 127.0.0.1) is refused (403).
//   - Headers on every answer: a Content-Security-Policy of default-src 'self' with no inline script
//     or style and frame-ancestors 'none'; X-Frame-Options DENY; nosniff; no referrer; no caching of
//     the API's answers.
//   - Sign-in: a random token made at each start (Server.LoginURL puts it in the URL's fragment, which
//     browsers never send to a server or a Referer). The page posts it to /api/login, which sets an
//     HttpOnly, SameSite=Strict session cookie whose name carries the port (cookies do not separate
//     ports), and removes the fragment from the address bar and history. Every /api/ route but
//     login answers 401 without the cookie.
//   - CSRF: every request other than GET and HEAD must carry the header X-Fieldmesh-CSRF with this
//     start's CSRF value, which the page reads from GET /api/session (a cross-origin page cannot read
//     it). A state-changing request, and any /api/ request, whose Origin is another origin or whose
//     Sec-Fetch-Site is cross-site or same-site (another port of 127.0.0.1 is the same site, and
//     gets the SameSite cookie), is refused.
//   - No content in URLs: message text, patient references and team names travel in POST bodies and
//     JSON answers only; the URLs the page uses carry ids, a month and a page size.
//
// Routes of this package (all JSON unless said):
//
//	GET  /, /app.js, /style.css          the page (no sign-in needed: they hold no data)
//	POST /api/login    {"token"}         sets the session cookie
//	GET  /api/session                    {"csrf","name","device"}: device is this device's full id
//	GET  /api/messages?team=ID[&before=MSGID][&limit=N]   {"messages","more"}: the newest N
//	                                     (default 100, at most 500) before message MSGID, in display order;
//	                                     what is returned counts as read, as with the CLI
//	GET  /api/events                     text/event-stream: "team" events ({"team":ID}) when a team's log
//	                                     grows, "status" every StatusEvery; no content, only ids
//	POST /api/qr       {"text"}          {"size","path"}: the QR code of text as an SVG path
//	     /api/v1/...                     node/localapi's routes (status, teams, send, members, ...),
//	                                     through its Gate: /api/v1/lock and /api/v1/unlock too
//
// Lock (lock.go): with Config.Lock (node/session), the UI drives whichever node is unlocked. While the
// device is locked every route that would show content answers 423 {"error","locked":true}; the page
// reloads (so nothing it showed stays in it) into a lock screen with a passphrase field. The page's own
// reads carry X-Fieldmesh-Background and do not keep the device unlocked; what the user does (a POST)
// does.
//
// Concurrency: a Server is safe for concurrent use; each event stream runs one goroutine per team
// it watches, all ended before its handler returns.
//
// Caveats: anyone who can run code as the device's user can read the token from the local API
// socket, as they can drive the node there; the page is plain HTTP on loopback, so another local user
// who can sniff loopback could see it (the cookie, like the token, is good for this start only).
package webui
