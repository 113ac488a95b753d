package update

import "github.com/tandem-dhcp/tandem/fsm"

// SelectOwed returns the bindings with an update owed to the partner
// (fsm.Binding.Owed: a partner lifetime to send, or FlagUpdateOwed): what an
// UPDREQ asks for (RFC 8156 §5.3.5, digest §9), what is flushed on entering
// NORMAL (§8.8) and what the periodic scan resends. Feed the result to
// Updates.
func SelectOwed(bs []fsm.Binding) []fsm.Binding {
	var out []fsm.Binding
	for i := range bs {
		if bs[i].Owed() {
			out = append(out, bs[i])
		}
	}
	return out
}

// SelectEager returns the owed bindings that may be sent as soon as they
// change (lazy update, RFC 8156 §4.3): those not held back by FlagResent,
// which marks an update that must wait for the periodic scan after an
// OutdatedBindingInformation dispute (§7.5.4, see AfterOutdated).
func SelectEager(bs []fsm.Binding) []fsm.Binding {
	var out []fsm.Binding
	for i := range bs {
		if bs[i].Owed() && bs[i].Flags&fsm.FlagResent == 0 {
			out = append(out, bs[i])
		}
	}
	return out
}

// SelectAll returns every binding: what an UPDREQALL asks for (RFC 8156
// §5.3.6), including un-leased delegable prefixes, which Updates sends as
// lone IAPREFIX records so that the partner learns pool ownership (FREE
// and FREE-BACKUP). A delegable prefix with no binding is FREE (Blank) and
// needs no record.
func SelectAll(bs []fsm.Binding) []fsm.Binding {
	return append([]fsm.Binding(nil), bs...)
}
