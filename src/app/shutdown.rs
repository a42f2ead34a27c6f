//! Waiting for the signals that start a graceful shutdown.

use std::future::Future;

/// Listens for SIGTERM (what Kubernetes sends) and SIGINT (Ctrl-C) from now
/// on, and returns a future that completes when either arrives.
///
/// The handlers are installed before this function returns, so a signal
/// that arrives while the app is still starting is not lost and does not
/// kill the process.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = int.recv() => tracing::info!("SIGINT received"),
                    }
                }
                (term, int) => {
                    let error = term.err().or(int.err());
                    tracing::warn!(
                        ?error,
                        "cannot listen for SIGTERM/SIGINT; falling back to Ctrl-C only"
                    );
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
