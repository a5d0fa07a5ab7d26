<?php
// Mail Bridge module: every text staff and clients read.
$lang['MailBridge.name'] = 'Mail Bridge (Mailcheap NMS)';
$lang['MailBridge.description'] = 'Provisions mail accounts (DomainAdmins with a quota bundle) through the mail bridge.';
$lang['MailBridge.module_row'] = 'Bridge';
$lang['MailBridge.module_row_plural'] = 'Bridges';
$lang['MailBridge.module_group'] = 'Bridge Group';
$lang['MailBridge.order_options.first'] = 'First non-full bridge';

$lang['MailBridge.manage.title'] = 'Bridges';
$lang['MailBridge.manage.add'] = 'Add Bridge';
$lang['MailBridge.manage.none'] = 'No bridge is set up yet.';
$lang['MailBridge.manage.label'] = 'Label';
$lang['MailBridge.manage.url'] = 'Bridge URL';
$lang['MailBridge.manage.source'] = 'Source';
$lang['MailBridge.manage.edit'] = 'Edit';
$lang['MailBridge.row.label'] = 'Label';
$lang['MailBridge.row.bridge_url'] = 'Bridge URL (https://...)';
$lang['MailBridge.row.source'] = 'Source name (sources: in the bridge config)';
$lang['MailBridge.row.secret'] = 'Secret (whsec_...)';
$lang['MailBridge.row.secret_keep'] = 'Secret (leave empty to keep the current one)';
$lang['MailBridge.row.save'] = 'Save';

$lang['MailBridge.package.plan'] = 'Tier';
$lang['MailBridge.package.plan_mapping'] = '(none: the bridge maps this package id)';
$lang['MailBridge.package.plan_stale'] = '%1$s: NOT a tier of the bridge, choose another';
$lang['MailBridge.package.plan_unavailable'] = 'The tiers could not be read (%1$s); the saved value is kept.';
$lang['MailBridge.package.report_moves'] = 'Report a service moved to another client (needs the Mail Bridge plugin)';

$lang['MailBridge.service.username'] = 'Mail admin username';
$lang['MailBridge.service.domain'] = 'Mail domain';
$lang['MailBridge.service.password'] = 'Password (empty: one is generated)';
$lang['MailBridge.service.password_edit'] = 'New password (empty: unchanged)';

$lang['MailBridge.tab_admin'] = 'Mail Bridge';
$lang['MailBridge.tab_client'] = 'Mail account';
$lang['MailBridge.tab.state'] = 'State on the bridge';
$lang['MailBridge.tab.in_sync'] = 'in sync with the mail server';
$lang['MailBridge.tab.not_in_sync'] = 'not yet applied on the mail server';
$lang['MailBridge.tab.unknown'] = 'not known to the bridge yet (nothing sent)';
$lang['MailBridge.tab.last_event'] = 'Last bridge event';
$lang['MailBridge.tab.last_call'] = 'Last request from Blesta';
$lang['MailBridge.tab.retry'] = 'Send it again';
$lang['MailBridge.tab.retry_pending'] = 'The service is pending: press Activate to run the module again with the same request.';
$lang['MailBridge.tab.retry_password'] = 'A password change is never stored unsent: set the password again from the service.';
$lang['MailBridge.tab.retried'] = 'Sent again: %1$s';
$lang['MailBridge.tab.events'] = 'Events of this service on the bridge';
$lang['MailBridge.tab.unavailable'] = 'Mail account details are unavailable right now. Please try again later.';
$lang['MailBridge.tab.being_set_up'] = 'Your mail account is being set up.';
$lang['MailBridge.tab.username'] = 'Username';
$lang['MailBridge.tab.mail_hostname'] = 'Mail server';
$lang['MailBridge.tab.webmail'] = 'Webmail';
$lang['MailBridge.tab.admin_url'] = 'Mail admin panel';
$lang['MailBridge.tab.mx'] = 'MX records';
$lang['MailBridge.tab.spf'] = 'SPF record (TXT)';
$lang['MailBridge.tab.usage'] = 'Usage';
$lang['MailBridge.tab.storage'] = 'Storage';
$lang['MailBridge.tab.mailboxes'] = 'Mailboxes';
$lang['MailBridge.tab.domains'] = 'Domains';
$lang['MailBridge.tab.aliases'] = 'Aliases';
$lang['MailBridge.tab.read_at'] = 'Read at';
$lang['MailBridge.tab.usage_none'] = 'Not read yet.';

$lang['MailBridge.!error.module_row.missing'] = 'No bridge is selected for this service: add a bridge under the module and choose it on the package.';
$lang['MailBridge.!error.row'] = 'Mail Bridge: %1$s.';
$lang['MailBridge.!error.row.unreachable'] = 'Mail Bridge: the bridge could not be used with these settings: %1$s';
$lang['MailBridge.!error.plan.unknown'] = 'Mail Bridge: "%1$s" is not a tier of the bridge (its tiers: %2$s).';
$lang['MailBridge.!error.plan.unchecked'] = 'Mail Bridge: the tier could not be checked: %1$s';
$lang['MailBridge.!error.username.format'] = 'The mail admin username must be 3 to 64 lower-case letters, digits, dots, hyphens or underscores, starting with a letter or digit.';
$lang['MailBridge.!error.username.changed'] = 'The mail admin username cannot be changed once the account exists.';
$lang['MailBridge.!error.domain.format'] = 'Enter the mail domain as a domain name, e.g. example.com.';
$lang['MailBridge.!error.password.policy'] = 'The password must be at least 12 characters and contain an upper-case letter, a lower-case letter and a digit.';
$lang['MailBridge.!error.service_id.unknown'] = 'Mail Bridge: the bridge needs the Blesta service id, which does not exist yet while a service is added as active. Add the service as Pending, then Activate it.';
$lang['MailBridge.!error.service_id.ambiguous'] = 'Mail Bridge: more than one pending service of this client and package could be meant; enter the mail admin username of the one to activate.';
$lang['MailBridge.!error.bridge'] = 'Mail Bridge: %1$s';
