//! Ctrl-C.

/// Ctrl-C, listened for from creation on (so a Ctrl-C is never lost between two waits).
pub(crate) struct Interrupts {
    #[cfg(unix)]
    sig: tokio::signal::unix::Signal,
    #[cfg(windows)]
    sig: tokio::signal::windows::CtrlC,
}

impl Interrupts {
    pub(crate) fn new() -> Result<Interrupts, String> {
        #[cfg(unix)]
        let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        #[cfg(windows)]
        let sig = tokio::signal::windows::ctrl_c();
        sig.map(|sig| Interrupts { sig })
            .map_err(|e| format!("cannot listen for Ctrl-C: {e}"))
    }

    pub(crate) async fn recv(&mut self) {
        if self.sig.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
