//! `killswitch watch`: the terminal dashboard (ratatui) of a live engine,
//! read from its control block. `k` trips KILL after a `y` confirmation,
//! `q` quits; `--once --plain` prints one frame for scripts.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use killswitch::control::{Mode, Operator, Source};
use killswitch_tools::admin::dashboard::{lines, DashLine, Tone};
use killswitch_tools::admin::view::EngineView;
use ratatui::backend::CrosstermBackend;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Terminal;

use crate::{exit, Target};

/// `killswitch watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
    /// Plain text, no terminal control (a frame per --interval, or one with --once).
    #[arg(long)]
    plain: bool,
    /// Refresh period.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    interval: Duration,
}

/// Restores the terminal however the dashboard ends (a panic included).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
    }
}

fn style(t: Tone) -> Style {
    match t {
        Tone::Normal => Style::default(),
        Tone::Heading => Style::default().add_modifier(Modifier::BOLD),
        Tone::Good => Style::default().fg(Color::Green),
        Tone::Warn => Style::default().fg(Color::Yellow),
        Tone::Alert => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// Runs the dashboard.
pub fn run(a: WatchArgs, t: &Target) -> ExitCode {
    let operator = match t.operator() {
        Ok(o) => o,
        Err(e) => return crate::control_cmds::fail(&e),
    };
    let block = operator.block();
    if a.once || a.plain || !std::io::stdout().is_terminal() {
        loop {
            for l in lines(&EngineView::read(block)) {
                outln!("{}", l.text);
            }
            if a.once {
                return ExitCode::from(exit::OK);
            }
            outln!("");
            std::thread::sleep(a.interval);
        }
    }
    match tui(&operator, &a) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("killswitch: error: terminal: {e}");
            ExitCode::from(exit::IO)
        }
    }
}

/// The prompt shown while a trip waits for its confirmation.
enum Prompt {
    None,
    ConfirmKill,
    Said(String),
}

fn tui(operator: &Operator, a: &WatchArgs) -> std::io::Result<()> {
    let block = operator.block();
    enable_raw_mode()?;
    let guard = TerminalGuard;
    execute!(std::io::stdout(), EnterAlternateScreen)?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let mut prompt = Prompt::None;
    loop {
        let view = EngineView::read(block);
        let mut text: Vec<Line> = lines(&view)
            .into_iter()
            .map(|DashLine { text, tone }| Line::from(Span::styled(text, style(tone))))
            .collect();
        text.push(Line::from(""));
        text.push(match &prompt {
            Prompt::None => Line::from("keys: k = trip KILL (asks to confirm)   q = quit"),
            Prompt::ConfirmKill => Line::from(Span::styled(
                format!(
                    "TRIP KILL on engine '{}'? All new orders stop and every open order is cancelled. y = confirm, any other key = cancel",
                    block.name()
                ),
                style(Tone::Alert),
            )),
            Prompt::Said(s) => Line::from(Span::styled(s.clone(), style(Tone::Warn))),
        });
        term.draw(|f| {
            let title = format!(" killswitch watch: {} ", block.path().display());
            f.render_widget(
                Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(title)),
                f.area(),
            );
        })?;
        let until = Instant::now() + a.interval;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            let Event::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            prompt = match (&prompt, k.code) {
                (Prompt::ConfirmKill, KeyCode::Char('y') | KeyCode::Char('Y')) => {
                    let out = operator.trip_global(
                        Mode::Kill,
                        Source::Cli,
                        "killswitch watch: operator tripped KILL from the dashboard",
                    );
                    Prompt::Said(format!(
                        "KILL tripped: generation {}",
                        out.transition.current().generation()
                    ))
                }
                (Prompt::ConfirmKill, _) => Prompt::Said("trip cancelled".into()),
                (_, KeyCode::Char('q') | KeyCode::Esc) => {
                    drop(guard);
                    return Ok(());
                }
                (_, KeyCode::Char('k') | KeyCode::Char('K')) => Prompt::ConfirmKill,
                (p, _) => match p {
                    Prompt::ConfirmKill => Prompt::ConfirmKill,
                    _ => Prompt::None,
                },
            };
            break;
        }
    }
}
