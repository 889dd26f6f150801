#!/usr/bin/perl
# Perl on a virtio-fs root: core modules loaded from the share, dpkg's status database parsed,
# a temporary file written, read back, digested and removed.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use List::Util qw(sum);
use File::Temp qw(tempfile);

my ($path) = @ARGV;
open(my $in, '<', $path) or die "open $path: $!";
local $/ = "";  # paragraph mode: one package stanza per read
my %size;
while (my $stanza = <$in>) {
    my ($name) = $stanza =~ /^Package: (\S+)/m or next;
    my ($kib) = $stanza =~ /^Installed-Size: (\d+)/m;
    $size{$name} = $kib // 0;
}
close($in);
my ($fh, $tmp) = tempfile(DIR => '/root');
print $fh map { "$_ $size{$_}\n" } sort keys %size;
close($fh);
open(my $back, '<', $tmp) or die "reopen $tmp: $!";
my $digest = md5_hex(do { local $/; <$back> });
close($back);
unlink($tmp) or die "unlink $tmp: $!";
printf "packages=%d installed_kib=%d md5=%s\n", scalar(keys %size), sum(values %size), $digest;
