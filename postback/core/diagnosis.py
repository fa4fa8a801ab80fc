"""Plain-language diagnoses of an attempt, for the test tool and the attempt log."""

from __future__ import annotations

from postback.core.retry import ErrorClass, Outcome


def diagnose(outcome: Outcome, error: ErrorClass | None, status: int | None,
             success_response: str | None = None, error_response: str | None = None,
             location: str | None = None) -> str:
    if outcome is Outcome.SUCCESS:
        return f"Delivered: your server answered {status}."
    if error is ErrorClass.DNS:
        return ("DNS failure: the host name does not resolve. Check the spelling of the host "
                "in the URL; this is not retried.")
    if error is ErrorClass.BLOCKED:
        return ("Refused: the host is or resolves to an address that is not on the public "
                "internet (loopback, private, link-local, metadata...). Postbacks go to public "
                "addresses only; this is not retried.")
    if error is ErrorClass.DNS_TEMPORARY:
        return ("DNS did not answer in time or failed for now (the name's servers may be "
                "down or slow): this is retried.")
    if error is ErrorClass.INVALID_URL:
        return "The URL is not a valid absolute http(s) URL; this is not retried."
    if error is ErrorClass.INVALID_REQUEST:
        return ("The request cannot be sent as set up: a header name or value holds a line "
                "break or another control character. Fix the setting's headers; this is not "
                "retried.")
    if error is ErrorClass.INTERNAL:
        return ("An error on our side, not your server's: the attempt is recorded with the "
                "reason and retried like any failure.")
    if error is ErrorClass.CONNECTION:
        return ("Connection failed or was refused: nothing accepted the connection at that "
                "host and port, or it was dropped. Check that your server is up and reachable "
                "from the internet; this is retried.")
    if error is ErrorClass.TLS:
        return ("TLS error: the certificate could not be verified for this host name (expired, "
                "self-signed or for another name). This is retried.")
    if error is ErrorClass.TIMEOUT:
        return ("Timeout: your server did not answer in time (5 s to connect, 15 s in all). "
                "Answer quickly and do slow work after responding; this is retried.")
    if error is ErrorClass.REDIRECT:
        where = f" to {location}" if location else ""
        return (f"Redirect ({status}){where}: redirects are never followed. Put the final URL "
                "in the setting; this is not retried.")
    if error is ErrorClass.UNEXPECTED_RESPONSE:
        if error_response is not None and success_response is None:
            return (f"Your server answered {status}, but its body contains the Error Response "
                    f"text {error_response!r}; this is retried.")
        return (f"Your server answered {status}, but its body does not match: it must contain "
                f"the Success Response text {success_response!r}"
                + (f" and not the Error Response text {error_response!r}"
                   if error_response else "") + "; this is retried.")
    if status is not None and status in (408, 429):
        return (f"Your server answered {status} (try again later): this is retried, after at "
                "least a minute for 429, honouring Retry-After.")
    if status is not None and 400 <= status < 500:
        return (f"Your server answered {status}: it refused the request (check the path, "
                "parameters and any authentication header); this is not retried.")
    if status is not None and status >= 500:
        return f"Your server answered {status}: a server error; this is retried."
    if error is ErrorClass.EXHAUSTED:
        return "Every retry failed; resend it once the problem is fixed."
    return "The attempt failed."
