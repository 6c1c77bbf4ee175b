# Writes countersign.1 (roff) from the built binary's own --help texts, so the page always says
# what the binary does. Run by `cmake -P` with BIN, OUTPUT and VERSION.
# The subcommand names a --help text lists under "Subcommands:".
function(subcommands_of out)
  execute_process(COMMAND ${BIN} ${ARGN} --help OUTPUT_VARIABLE text ERROR_QUIET)
  set(names "")
  string(FIND "${text}" "Subcommands:" at)
  if(at GREATER -1)
    string(SUBSTRING "${text}" ${at} -1 text)
    string(REGEX MATCHALL "\n  [a-z][-a-z]*" found "${text}")
    foreach(line ${found})
      string(STRIP "${line}" name)
      list(APPEND names ${name})
    endforeach()
  endif()
  set(${out} ${names} PARENT_SCOPE)
endfunction()

function(help_of out)
  execute_process(COMMAND ${BIN} ${ARGN} --help OUTPUT_VARIABLE text ERROR_VARIABLE err RESULT_VARIABLE rc)
  # roff: a leading '.' or "'" starts a request, '\' escapes; keep the text literal.
  string(REPLACE "\\" "\\e" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

help_of(top)
string(TIMESTAMP today "%Y-%m-%d" UTC)
set(page ".TH COUNTERSIGN 1 \"${today}\" \"countersign ${VERSION}\" \"User Commands\"
.SH NAME
countersign \\- human approval for NATS job pipelines
.SH SYNOPSIS
.B countersign
\\fICOMMAND\\fR [\\fIOPTIONS\\fR]
.SH DESCRIPTION
countersign is a gateway between producers and workers on NATS. It evaluates a YAML policy on
every job, forwards what is allowed, refuses what is denied, slows what is throttled, and holds
what needs a human in a JetStream KV bucket until an approver decides; an approved job is
released exactly once.
.PP
.nf
${top}
.fi
.SH COMMANDS
")
subcommands_of(commands)
foreach(command ${commands})
  help_of(text ${command})
  string(APPEND page ".SS countersign ${command}\n.nf\n${text}\n.fi\n")
  subcommands_of(nested ${command})
  foreach(sub ${nested})
    help_of(text ${command} ${sub})
    string(APPEND page ".SS countersign ${command} ${sub}\n.nf\n${text}\n.fi\n")
  endforeach()
endforeach()
string(APPEND page ".SH EXIT STATUS
.TP
.B 0
done: a success answer, a passed check, a valid file; run and bridge stopped by SIGTERM or SIGINT
.TP
.B 1
refused or failed: a 4xx/5xx answer, a denied submit, a failed audit verify, a receipt that does not verify, a permission refused by the NATS server
.TP
.B 2
usage: an unknown command or option, an invalid config or policy file
.TP
.B 3
cannot reach: no NATS server, credentials or TLS the server refuses, no answer, or the gateway could not start (one line says why)
.SH ENVIRONMENT
NATS_URL, NATS_CONTEXT, NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CERT,
NATS_KEY, NATS_CA (client commands, as the nats CLI reads them); COUNTERSIGN_NATS_URL,
COUNTERSIGN_NATS_EMBEDDED, COUNTERSIGN_DATA_DIR, COUNTERSIGN_POLICY_FILE, COUNTERSIGN_BUCKET,
COUNTERSIGN_PREFIX, COUNTERSIGN_ADMIN_LISTEN (countersign run).
.SH FILES
/etc/countersign/countersign.yaml, /etc/countersign/approval-policy.yaml
.SH SEE ALSO
.BR nats-server (8).
The documentation in /usr/share/doc/countersign: cli.md, configuration.md, policy.md, protocol.md.
")
file(WRITE ${OUTPUT} "${page}")
