<?php
$lang['MailBridgePlugin.name'] = 'Mail Bridge';
$lang['MailBridgePlugin.description'] = 'Signs service events (add, edit, suspend, unsuspend, cancel, renew, password) and posts them to the mail bridge, which provisions the Mailcheap NMS DomainAdmin.';
$lang['MailBridgePlugin.cron.retry_outbox_name'] = 'Mail Bridge: resend undelivered events';
$lang['MailBridgePlugin.cron.retry_outbox_desc'] = 'Sends events the mail bridge could not be reached for, in order, with their original webhook-id.';
