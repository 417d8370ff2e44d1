"""A person's raw material → training records (``mindprint data import``).

One module per source family, each yielding :class:`~.common.Conversation` s (or prose passages):

* :mod:`.transcript` — speaker-labelled transcripts, Q/A interviews, markdown interviews (own
  parser: the layouts are a handful of line patterns; no library covers them).
* :mod:`.subtitles` — ``.srt`` via ``srt`` and ``.vtt`` via ``webvtt-py`` (small, pure Python,
  maintained; they handle cue framing and timestamps, we only find speakers).
* :mod:`.whatsapp` — own parser. ``chat-miner`` was checked: it drags in polars, pandas,
  matplotlib, wordcloud and the obsolete ``argparse`` backport (~60 MB) to return a DataFrame,
  and its WhatsApp parser is itself a regex over the same header layouts.
* :mod:`.chatjson` — Telegram, Discord (DiscordChatExporter), Messenger/Instagram, Slack folders:
  stdlib ``json``; each layout is a few keys.
* :mod:`.mail` — mbox / ``.eml`` via the stdlib ``mailbox`` and ``email`` (quote and signature
  stripping is our own; the maintained quote-strippers, e.g. ``mail-parser-reply``, cover fewer
  layouts than the rules we need and pull regex-heavy dependencies).
* :mod:`.prose` — paragraph-bounded passages under a token budget.

Shared: :mod:`.turns` (roles, merging, context, filters, dedup), :mod:`.pii` (scrub, with
``phonenumbers`` for phone numbers; ``scrubadub`` weighed and not taken, see there) and
:mod:`.run` (detection and the driver the CLI calls).
"""

# source kinds for ``--from`` (instagram is messenger's layout); run.PARSERS implements them
KINDS = ("transcript", "srt", "vtt", "whatsapp", "telegram", "discord", "messenger", "instagram",
         "slack", "mbox", "eml", "prose")
