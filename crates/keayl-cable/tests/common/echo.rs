//! The echo probe channel, alone in its file so that other crates' tests can
//! share it with `#[path = "../../keayl-cable/tests/common/echo.rs"] mod echo;`
//! (it needs only `keayl_cable`, `serde` and `serde_json`).

#![allow(dead_code)]

use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use serde_json::Value;

pub const ECHO_ID: &str = r#"{"channel":"EchoChannel"}"#;

/// One action, `echo`, transmitting the whole data object back (`action`
/// first, then the rest in the client's order); any other action is an
/// invalid action. With a `stream` param (a string) it also streams that
/// stream, so broadcasts reach it. Used as a probe that a connection still
/// works.
#[derive(Default)]
pub struct EchoChannel;

/// The echo action: the message's data besides `action`.
#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum EchoAction {
    Echo {
        #[serde(flatten)]
        rest: Data,
    },
}

/// `{"action": name, ...rest}`: a message's data as the client sent it.
pub fn with_action(name: &str, rest: Data) -> Data {
    let rest = &rest.as_json()[1..];
    let comma = if rest == "}" { "" } else { "," };
    let text = format!("{{\"action\":{}{comma}{rest}", Value::from(name));
    serde_json::from_str(&text).expect("an object")
}

impl Channel for EchoChannel {
    const NAME: &'static str = "EchoChannel";
    type Action = EchoAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        if let Some(stream) = ctx.param_str("stream") {
            let stream = stream.to_owned();
            ctx.stream_from(stream);
        }
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: EchoAction,
    ) -> Result<(), ChannelError> {
        let EchoAction::Echo { rest } = action;
        ctx.transmit(with_action("echo", rest));
        Ok(())
    }
}
