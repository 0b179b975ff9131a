"""The naive baseline: what a poller costs that does the obvious thing for every login event.

For each login event, in log order: read the user; if the user is not flagged and has an email,
create a lead (one record per call, as the Auth0 Action template does) and write the flag back.
It reads the same log pages by checkpoint and keeps one token per API, so the difference to
lead-poller is only the per-event work. To keep the benchmark short it works several users at once
(`concurrency`), each user's events still one after the other; that changes its wall time, never its
call count.
"""

from __future__ import annotations

import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from poller.sandbox import AUTH0_CLIENT_ID, COMPANY, SALESFORCE_CLIENT_ID, Sandbox


class NaivePoller:
    def __init__(self, sandbox: Sandbox, *, login_types: frozenset[str], concurrency: int = 4) -> None:
        self.sandbox = sandbox
        self.login_types = login_types
        self.concurrency = concurrency
        self.checkpoint: str | None = None
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox.ca_bundle)), timeout=30.0)
        self._auth0_token: str | None = None
        self._salesforce: tuple[str, str] | None = None  # (instance_url, token)
        self._lock = threading.Lock()
        self.leads_created = 0

    def close(self) -> None:
        self.http.close()

    # --- tokens, fetched once -------------------------------------------------------------------

    def _auth0(self) -> dict[str, str]:
        with self._lock:
            if self._auth0_token is None:
                base = self.sandbox.auth0.base_url
                answer = self.http.post(f"{base}/oauth/token", data={
                    "grant_type": "client_credentials", "client_id": AUTH0_CLIENT_ID,
                    "client_secret": self.sandbox.auth0_secret, "audience": f"{base}/api/v2/",
                })
                answer.raise_for_status()
                self._auth0_token = answer.json()["access_token"]
            return {"Authorization": f"Bearer {self._auth0_token}"}

    def _sf(self) -> tuple[str, dict[str, str]]:
        with self._lock:
            if self._salesforce is None:
                answer = self.http.post(f"{self.sandbox.salesforce.base_url}/services/oauth2/token", data={
                    "grant_type": "client_credentials", "client_id": SALESFORCE_CLIENT_ID,
                    "client_secret": self.sandbox.salesforce_secret,
                })
                answer.raise_for_status()
                body = answer.json()
                self._salesforce = (body["instance_url"], body["access_token"])
            instance, token = self._salesforce
            return instance, {"Authorization": f"Bearer {token}"}

    # --- the loop -------------------------------------------------------------------------------

    def run(self, start_from: str | None = None) -> None:
        """Read every log page after the checkpoint (or `start_from`) and work each login event."""
        base = self.sandbox.auth0.base_url
        checkpoint = self.checkpoint or start_from or "0"
        with ThreadPoolExecutor(self.concurrency) as pool:
            while True:
                answer = self.http.get(f"{base}/api/v2/logs", params={"from": checkpoint, "take": 100}, headers=self._auth0())
                answer.raise_for_status()
                page = answer.json()
                if not page:
                    break
                per_user: dict[str, list[dict[str, Any]]] = {}
                for event in page:
                    if event.get("type") in self.login_types and event.get("user_id"):
                        per_user.setdefault(event["user_id"], []).append(event)
                list(pool.map(self._work_user, per_user.items()))
                checkpoint = page[-1]["log_id"]
        self.checkpoint = checkpoint

    def _work_user(self, item: tuple[str, list[dict[str, Any]]]) -> None:
        user_id, events = item
        for _ in events:  # every login event costs a profile read
            self._work_event(user_id)

    def _work_event(self, user_id: str) -> None:
        base = self.sandbox.auth0.base_url
        answer = self.http.get(f"{base}/api/v2/users/{user_id}", headers=self._auth0())
        if answer.status_code != 200:
            return
        user = answer.json()
        if (user.get("app_metadata") or {}).get("recordedAsLead") is True or not user.get("email"):
            return
        instance, headers = self._sf()
        lead = {"LastName": (user.get("family_name") or user.get("name") or user["email"])[:80], "Company": COMPANY, "Email": user["email"]}
        created = self.http.post(f"{instance}/services/data/v59.0/sobjects/Lead", json=lead, headers=headers)
        if created.status_code != 201:
            return
        with self._lock:
            self.leads_created += 1
        self.http.patch(
            f"{base}/api/v2/users/{user_id}",
            json={"app_metadata": {"recordedAsLead": True, "salesforceLeadId": created.json()["id"]}},
            headers=self._auth0(),
        )
