package registry

// UploadsInFlight is how many upload slots account holds: tests wait for
// their slow uploads to hold theirs before probing the cap.
func (h *Handler) UploadsInFlight(account string) int {
	h.uploadSlots.mu.Lock()
	defer h.uploadSlots.mu.Unlock()
	return h.uploadSlots.n[account]
}
