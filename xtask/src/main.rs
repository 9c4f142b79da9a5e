//! `cargo xtask`: the project's build and test entry points. This file only dispatches:
//! the toolchain bootstrap is `toolchain.rs`, the apt and pip packages `packages.rs`, the
//! builds `build.rs`, test orchestration and the results pages' runs `test.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "build tooling run by hand or by CI: a panic is a failed run that names its cause, as an error would"
)]

use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod build;
mod clippy_ebpf;
mod command;
mod containerd;
mod image;
mod kubelet;
mod lint;
mod long;
mod packages;
mod test;
mod toolchain;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel programs (bootstrapping rust-src and bpf-linker if needed).
    BuildEbpf,
    /// Clippy over the kernel programs, for their bpf target (warnings fail it).
    ClippyEbpf,
    /// Build the kernel programs and the `oom-observer` binary that embeds them.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build (release) and run `oom-observer`; arguments after `--` go to it (default: `run`).
    Run {
        /// Arguments for oom-observer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Race our TaskOOM against containerd's own and TaskExit over N real container OOM
    /// kills (release build); writes docs/race-host.md, or with --vm runs it in the cgroup
    /// v2 guests (Linux 6.12, x86_64 and arm64) and writes docs/race-vm.md.
    Race {
        /// How many OOM kills (per guest with --vm).
        #[arg(long, default_value_t = 200)]
        kills: usize,
        /// In the cgroup v2 VM guests instead of on this host.
        #[arg(long)]
        vm: bool,
        /// With --vm: write the tables somewhere else than docs/race-vm.md.
        #[arg(long)]
        report: Option<PathBuf>,
        /// With --vm: boot nothing, write the tables again from the consoles of the last run
        /// (target/vm/*.race.console.log).
        #[arg(long)]
        rerender: bool,
        /// With --vm: which kernel messages reach the guests' serial consoles. Any but the
        /// default is not the results page's run: its page goes under target/vm/.
        #[arg(long, value_enum, default_value_t = vm::ConsoleLevel::Emergencies)]
        console: vm::ConsoleLevel,
        /// With --vm: one guest only (e.g. linux-6.12-x86_64); a partial run, whose page goes
        /// under target/vm/.
        #[arg(long)]
        only: Option<String>,
        /// With --vm: more kernel command line for the guests (e.g. `preempt=full`); a run
        /// whose page goes under target/vm/.
        #[arg(long)]
        append: Option<String>,
        /// With --vm: the containerd release in the guests (1.7.24, 2.1.9; Debian 12's
        /// 1.6.20 when not given); a run whose page goes under target/vm/.
        #[arg(long)]
        containerd: Option<String>,
    },
    /// Who killed it, in the cgroup v2 VM guests: a `cgroup.kill` and Debian's earlyoom
    /// against pods run through containerd's CRI, with oom-observer running; fails unless
    /// each gets the right `container_exit` cause and sender.
    DeathsVm {
        /// One guest only (e.g. linux-6.12-x86_64); both 6.12 guests when absent.
        #[arg(long)]
        only: Option<String>,
        /// More kernel command line for the guests (e.g. `oomx.deaths_hook=tracepoint`: the
        /// classic tracepoints, whose `signal_generate` program names the sender too).
        #[arg(long)]
        append: Option<String>,
    },
    /// The forecast in the cgroup v2 VM guests: issue 24's leaks, step, sawtooth and holder,
    /// each in a pod run through containerd's CRI, beside the `predict_linear` baseline;
    /// fails unless each leak is warned about ahead of its kill by the limit that fires, and
    /// nothing else is.
    ForecastVm {
        /// One guest only (e.g. linux-6.12-x86_64); both 6.12 guests when absent.
        #[arg(long)]
        only: Option<String>,
    },
    /// The unenforced-limit audit scenarios (runc) in the cgroup v2 VM guests; writes
    /// docs/audit-vm.md.
    AuditVm {
        /// Write the results somewhere else.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Benchmarks (release build): latency, ordering on a loaded node, OOM storm, cost,
    /// metrics, memory and start-up on a big node, the forecast against `predict_linear`;
    /// writes docs/bench/.
    Bench {
        /// Run only the benchmarks whose test name contains this (e.g. `memory`).
        filter: Option<String>,
    },
    /// What the kubelet reads (release build): pods through containerd's CRI plugin
    /// OOM-killed with and without oom-observer, idle and loaded; writes docs/kubelet.md
    /// and docs/kubelet.json.
    Kubelet {
        /// OOM-killed pods per row on this host.
        #[arg(long, default_value_t = 200)]
        kills: usize,
        /// OOM-killed pods per row in each cgroup v2 guest (0: no guests).
        #[arg(long, default_value_t = 20)]
        vm_kills: usize,
        /// One guest only (e.g. linux-6.12-x86_64). A partial run (this, `--kills 0` or
        /// `--vm-kills 0`) writes its page under target/kubelet/, never docs/.
        #[arg(long)]
        only: Option<String>,
        /// Run nothing: write docs/kubelet.md again from the host and guest rows of the last
        /// run (target/kubelet/).
        #[arg(long)]
        rerender: bool,
        /// The containerd release (1.6.20, Debian 12's, the default; 1.7.24; 2.1.9): any
        /// other than the default is a partial run, written under target/kubelet/<release>/.
        #[arg(long, default_value = "1.6.20")]
        containerd: String,
    },
    /// Download and unpack every pinned containerd release (Debian's trixie and sid) for
    /// amd64 and arm64 into the cache; the test commands do it themselves when they need one.
    FetchContainerd,
    /// Build everything and run every test: unit tests, the host integration tests against
    /// real OOM kills on this machine's kernel, then the VM matrix (`vm-test`).
    Test {
        /// Skip the VM matrix (a quick local loop; CI never sets it).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (for example a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The container image: static musl builds for x86_64 and arm64, with Kubernetes Events
    /// (feature k8s-events), in one OCI archive (multi-arch index),
    /// target/oom-observer-image.oci.tar; offline, no registry.
    Image,
    /// A guest that is a real node: systemd as PID 1, containerd with `SystemdCgroup = true`,
    /// oom-observer as packaging/oom-observer.service; OOM-kills CRI pods in systemd scopes,
    /// scores the unit's sandboxing and checks `Restart=` with `--pin-dir` (Linux 6.12,
    /// x86_64); writes target/vm/systemd-guest.json.
    SystemdGuest(vm::SystemdGuestOptions),
    /// The VM matrix: Debian kernels × architectures × hook strategies, real OOM kills in
    /// qemu guests; writes docs/vm-matrix.md.
    VmTest(vm::VmOptions),
}
fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::BuildEbpf => build::build_ebpf().map(|_| ()),
        Cmd::ClippyEbpf => clippy_ebpf::clippy_ebpf(),
        Cmd::Build { release } => build::build(release).map(|_| ()),
        Cmd::Run { args } => {
            let bin = build::build(true)?;
            let args = if args.is_empty() {
                vec![OsString::from("run")]
            } else {
                args
            };
            let code = command::run_daemon(Command::new(&bin).args(&args))?;
            // xtask ends as the daemon did: its exit code is as docs/cli.md lists.
            std::process::exit(code)
        }
        Cmd::Test { no_vm, args } => test::all(no_vm, &args),
        Cmd::VmTest(opts) => vm::vm_test(&opts),
        Cmd::SystemdGuest(opts) => vm::systemd_guest(&opts),
        Cmd::Image => image::image().map(|_| ()),
        Cmd::Race {
            kills,
            vm: true,
            report,
            rerender,
            console,
            only,
            append,
            containerd: release,
        } => long::race_vm(
            kills,
            report,
            rerender,
            &vm::RaceRun {
                console,
                only,
                append,
                containerd: release
                    .as_deref()
                    .map(containerd::release)
                    .transpose()?
                    .filter(|r| r.name != containerd::default_name()),
                memory_mib: None,
            },
        ),
        Cmd::Race { kills, .. } => long::race(kills),
        Cmd::Bench { filter } => long::bench(filter.as_deref()),
        Cmd::Kubelet {
            kills,
            vm_kills,
            only,
            rerender,
            containerd,
        } => kubelet::kubelet(kills, vm_kills, only.as_deref(), rerender, &containerd),
        Cmd::FetchContainerd => containerd::fetch_all(&command::cache_dir()),
        Cmd::AuditVm { report } => long::audit_vm(report),
        Cmd::DeathsVm { only, append } => vm::deaths_vm(only.as_deref(), append.as_deref()),
        Cmd::ForecastVm { only } => vm::forecast_vm(only.as_deref()),
    }
}
