//! `starling agent`: binds the control API (and metrics) first, so a port in use is
//! named before anything starts; starts the node with the configured handlers;
//! prints the start-up lines; keeps trying unreachable bootstrap peers; and on
//! SIGINT/SIGTERM leaves gracefully, with its state saved in the data directory.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use libp2p::{Multiaddr, multiaddr::Protocol};
use starling_protocol::AgentId;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    Handle, NodeError, Result,
    app::{
        Out,
        api::{self, ApiState},
        executor::{ApiExecutor, SkillRouter},
        settings::AgentPlan,
        tracker::TaskTracker,
    },
    spawn,
};

/// First look at the bootstrap peers after start, then the retry period.
const BOOTSTRAP_FIRST_CHECK: Duration = Duration::from_secs(3);
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);

async fn bind(addr: SocketAddr, field: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| NodeError::Io {
        what: format!("cannot listen on {addr} ({field})"),
        reason: e.to_string(),
    })
}

fn local_addr(l: &TcpListener, field: &str) -> Result<SocketAddr> {
    l.local_addr().map_err(|e| NodeError::Io {
        what: format!("cannot read the address of {field}"),
        reason: e.to_string(),
    })
}

/// Fails if another socket holds a listen address's port. libp2p binds TCP with
/// `SO_REUSEPORT`, so a second agent on a taken port would otherwise share it
/// silently, each getting some of the incoming connections.
fn probe_ports(listen: &[Multiaddr]) -> Result<()> {
    for addr in listen {
        let mut ip = None;
        let mut socket = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(port) if port != 0 => socket = Some((port, true)),
                Protocol::Udp(port) if port != 0 => socket = Some((port, false)),
                _ => {}
            }
        }
        let (Some(ip), Some((port, tcp))) = (ip, socket) else {
            continue;
        };
        let at = SocketAddr::new(ip, port);
        let taken = if tcp {
            std::net::TcpListener::bind(at).err()
        } else {
            std::net::UdpSocket::bind(at).err()
        };
        if let Some(e) = taken {
            let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "{} port {port} is in use by another process",
                    if tcp { "TCP" } else { "UDP" }
                )
            } else {
                e.to_string()
            };
            return Err(NodeError::Listen {
                addr: addr.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

/// Runs the agent until a signal (or the node stops by itself).
pub async fn run(plan: AgentPlan, out: &Out) -> Result<()> {
    probe_ports(&plan.node.listen)?;
    let api_listener = bind(plan.control_api, "control_api").await?;
    let metrics_listener = match plan.metrics {
        Some(a) => Some(bind(a, "metrics").await?),
        None => None,
    };
    let executor = ApiExecutor::new();
    let router = SkillRouter::new(&plan.handlers, &executor);
    let modes: BTreeMap<String, &'static str> = plan
        .handlers
        .iter()
        .map(|(s, h)| (s.clone(), h.mode()))
        .collect();
    let bootstrap = plan.node.bootstrap.clone();
    let (handle, mut join) = spawn(plan.node, Arc::new(router)).await?;
    let tracker = TaskTracker::start(&handle, modes);

    out.line(&format!("peer-id {}", handle.id()));
    for addr in handle.listen_addrs() {
        out.line(&format!("listening {addr}"));
    }
    let api_addr = local_addr(&api_listener, "control_api")?;
    let state = ApiState {
        handle: handle.clone(),
        tracker,
        executor,
        token: plan.api_token.map(Arc::from),
    };
    let authed = state.token.is_some();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_app = api::router(state);
    let mut stop = stop_rx.clone();
    let api_server = tokio::spawn(async move {
        axum::serve(api_listener, api_app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    out.line(&if authed {
        format!("control-api http://{api_addr} bearer-token-required")
    } else {
        format!("control-api http://{api_addr}")
    });
    let metrics_server = match metrics_listener {
        Some(l) => {
            let addr = local_addr(&l, "metrics")?;
            let app = api::metrics_router(handle.clone());
            let mut stop = stop_rx.clone();
            out.line(&format!("metrics http://{addr}/metrics"));
            Some(tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }))
        }
        None => None,
    };
    info!(peer = %handle.id(), api = %api_addr, "agent running");
    let watcher = tokio::spawn(watch_bootstrap(handle.clone(), bootstrap));

    let stopped_by_itself = tokio::select! {
        () = shutdown_signal() => false,
        _ = &mut join => true,
    };
    watcher.abort();
    if stopped_by_itself {
        let _ = stop_tx.send(true);
        return Err(NodeError::Stopped);
    }
    out.line("leaving");
    info!("signal received: leaving every group, saving state");
    if let Err(e) = handle.shutdown().await {
        warn!(error = %e, "shutdown");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut join).await;
    let _ = stop_tx.send(true);
    // Event streams stay open until their clients go; do not wait on them for long.
    let _ = tokio::time::timeout(Duration::from_secs(2), api_server).await;
    if let Some(m) = metrics_server {
        let _ = tokio::time::timeout(Duration::from_secs(2), m).await;
    }
    out.line("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The peer id a multiaddr ends with, if it names one.
fn peer_of(addr: &Multiaddr) -> Option<AgentId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => id.to_string().parse().ok(),
        _ => None,
    })
}

/// Warns about bootstrap peers not connected shortly after start, and dials them
/// again periodically while they stay away (an unreachable bootstrap peer is not
/// fatal: it may come up later, and any other peer serves as well).
async fn watch_bootstrap(handle: Handle, bootstrap: Vec<Multiaddr>) {
    if bootstrap.is_empty() {
        return;
    }
    let mut warned = vec![false; bootstrap.len()];
    tokio::time::sleep(BOOTSTRAP_FIRST_CHECK).await;
    loop {
        let Ok(peers) = handle.peers().await else {
            return;
        };
        for (i, addr) in bootstrap.iter().enumerate() {
            let connected = match peer_of(addr) {
                Some(id) => peers.iter().any(|p| p.id == id),
                None => !peers.is_empty(),
            };
            if connected {
                if warned[i] {
                    info!(%addr, "bootstrap peer reached");
                    warned[i] = false;
                }
                continue;
            }
            if !warned[i] {
                warn!(%addr, "bootstrap peer unreachable; carrying on and retrying every 30 s");
                warned[i] = true;
            }
            let _ = handle.dial(addr.clone()).await;
        }
        tokio::time::sleep(BOOTSTRAP_RETRY).await;
    }
}
