"""lead-poller: Auth0 sign-ins become Salesforce Leads, once each, from outside the login path."""

__version__ = "0.1.0"
