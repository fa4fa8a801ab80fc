"""Plain-language diagnoses of an attempt, for the test tool and the attempt log.

:func:`diagnosis` gives a :class:`~postback.core.messages.Message` (translated where it is
shown); :func:`diagnose` its English, which the test tool's API answer and the attempt log
keep.
"""

from __future__ import annotations

from postback.core.messages import N_, Known, Message
from postback.core.retry import ErrorClass, Outcome

_FIXED = {
    ErrorClass.DNS: N_("DNS failure: the host name does not resolve. Check the spelling of "
                       "the host in the URL; this is not retried."),
    ErrorClass.BLOCKED: N_("Refused: the host is or resolves to an address that is not on the "
                           "public internet (loopback, private, link-local, metadata...). "
                           "Postbacks go to public addresses only; this is not retried."),
    ErrorClass.DNS_TEMPORARY: N_("DNS did not answer in time or failed for now (the name's "
                                 "servers may be down or slow): this is retried."),
    ErrorClass.INVALID_URL: N_("The URL is not a valid absolute http(s) URL; this is not "
                               "retried."),
    ErrorClass.INVALID_REQUEST: N_("The request cannot be sent as set up: a header name or "
                                   "value holds a line break or another control character. "
                                   "Fix the setting's headers; this is not retried."),
    ErrorClass.INTERNAL: N_("An error on our side, not your server's: the attempt is recorded "
                            "with the reason and retried like any failure."),
    ErrorClass.CONNECTION: N_("Connection failed or was refused: nothing accepted the "
                              "connection at that host and port, or it was dropped. Check "
                              "that your server is up and reachable from the internet; this "
                              "is retried."),
    ErrorClass.TLS: N_("TLS error: the certificate could not be verified for this host name "
                       "(expired, self-signed or for another name). This is retried."),
    ErrorClass.TIMEOUT: N_("Timeout: your server did not answer in time (5 s to connect, 15 s "
                           "in all). Answer quickly and do slow work after responding; this "
                           "is retried."),
}

_HAS_ERROR_TEXT = N_("Your server answered %(status)s, but its body contains the Error "
                     "Response text %(error)s; this is retried.")
_NO_MATCH_EITHER = N_("Your server answered %(status)s, but its body does not match: it must "
                      "contain the Success Response text %(success)s and not the Error "
                      "Response text %(error)s; this is retried.")
_NO_MATCH = N_("Your server answered %(status)s, but its body does not match: it must contain "
               "the Success Response text %(success)s; this is retried.")


def diagnosis(outcome: Outcome, error: ErrorClass | None, status: int | None,
              success_response: str | None = None, error_response: str | None = None,
              location: str | None = None) -> Message:
    if outcome is Outcome.SUCCESS:
        return Message(N_("Delivered: your server answered %(status)s."), status=status)
    if error in _FIXED:
        return Message(_FIXED[error])
    if error is ErrorClass.REDIRECT:
        if location:
            return Message(N_("Redirect (%(status)s) to %(location)s: redirects are never "
                              "followed. Put the final URL in the setting; this is not "
                              "retried."), status=status, location=location)
        return Message(N_("Redirect (%(status)s): redirects are never followed. Put the final "
                          "URL in the setting; this is not retried."), status=status)
    if error is ErrorClass.UNEXPECTED_RESPONSE:
        if error_response is not None and success_response is None:
            return Message(_HAS_ERROR_TEXT, status=status, error=repr(error_response))
        if error_response:
            return Message(_NO_MATCH_EITHER, status=status, success=repr(success_response),
                           error=repr(error_response))
        return Message(_NO_MATCH, status=status, success=repr(success_response))
    if status is not None and status in (408, 429):
        return Message(N_("Your server answered %(status)s (try again later): this is retried, "
                          "after at least a minute for 429, honouring Retry-After."),
                       status=status)
    if status is not None and 400 <= status < 500:
        return Message(N_("Your server answered %(status)s: it refused the request (check the "
                          "path, parameters and any authentication header); this is not "
                          "retried."), status=status)
    if status is not None and status >= 500:
        return Message(N_("Your server answered %(status)s: a server error; this is retried."),
                       status=status)
    if error is ErrorClass.EXHAUSTED:
        return Message(N_("Every retry failed; resend it once the problem is fixed."))
    return Message(N_("The attempt failed."))


#: the diagnoses with values, to find them again in an attempt's stored (English) error
DIAGNOSES = tuple(Known(msgid, shapes={"status": r"\d+|None"})
                  for msgid in (_HAS_ERROR_TEXT, _NO_MATCH_EITHER, _NO_MATCH))


def diagnose(outcome: Outcome, error: ErrorClass | None, status: int | None,
             success_response: str | None = None, error_response: str | None = None,
             location: str | None = None) -> str:
    """:func:`diagnosis` in English."""
    return diagnosis(outcome, error, status, success_response, error_response,
                     location).english()
